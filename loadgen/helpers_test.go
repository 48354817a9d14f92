package loadgen

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
)

var errTest = errors.New("test: push API down")

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func equal(a, b []string) bool { return slices.Equal(a, b) }
