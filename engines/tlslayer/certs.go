package tlslayer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Certs is a certificate and key loaded from files, reloadable (the gateway reloads on SIGHUP).
// A configuration from ServerConfig reads the current pair at every handshake, so a reload takes
// effect for new handshakes without a restart; connections already open keep theirs.
type Certs struct {
	certFile, keyFile string
	mu                sync.Mutex // serialises Reload
	cur               atomic.Pointer[tls.Certificate]
}

// LoadCerts loads the PEM certificate chain in certFile (leaf first) and its private key in
// keyFile. Errors name the file at fault.
func LoadCerts(certFile, keyFile string) (*Certs, error) {
	c := &Certs{certFile: certFile, keyFile: keyFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again. On failure it keeps the pair it had and the error names the
// file at fault.
func (c *Certs) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cert, err := loadPair(c.certFile, c.keyFile, time.Now())
	if err != nil {
		return err
	}
	c.cur.Store(cert)
	return nil
}

// Certificate is the pair served to new handshakes.
func (c *Certs) Certificate() *tls.Certificate { return c.cur.Load() }

// Files are the certificate and key files the pair is loaded from.
func (c *Certs) Files() (certFile, keyFile string) { return c.certFile, c.keyFile }

// ServerConfig returns a server configuration that serves the current pair (GetCertificate),
// accepts TLS 1.3 only, and offers nextProtos for ALPN.
func (c *Certs) ServerConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: slices.Clone(nextProtos),
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.cur.Load(), nil
		},
	}
}

// loadPair reads and checks one certificate and key pair.
func loadPair(certFile, keyFile string, now time.Time) (*tls.Certificate, error) {
	if certFile == "" {
		return nil, errors.New("tlslayer: no certificate file given")
	}
	if keyFile == "" {
		return nil, errors.New("tlslayer: no key file given")
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("tlslayer: certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlslayer: key: %w", err)
	}
	if b, _ := pem.Decode(certPEM); b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("tlslayer: certificate %s: no PEM CERTIFICATE block", certFile)
	}
	if b, _ := pem.Decode(keyPEM); b == nil || !isKeyBlock(b.Type) {
		return nil, fmt.Errorf("tlslayer: key %s: no PEM private key block", keyFile)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tlslayer: certificate %s with key %s: %w", certFile, keyFile, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tlslayer: certificate %s: %w", certFile, err)
		}
		pair.Leaf = leaf
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("tlslayer: certificate %s expired at %s", certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("tlslayer: certificate %s is not valid before %s", certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return &pair, nil
}

func isKeyBlock(typ string) bool {
	switch typ {
	case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY":
		return true
	}
	return false
}

// SelfSigned writes a fresh self-signed ECDSA P-256 certificate (a CA, valid a year, for the given
// DNS names and IP addresses, e.g. "localhost", "127.0.0.1") and its key as PEM files cert.pem and
// key.pem in dir (the key readable by its owner only), for tests and local benches: clients trust
// certFile as a root.
func SelfSigned(dir string, hosts ...string) (certFile, keyFile string, err error) {
	if len(hosts) == 0 {
		return "", "", errors.New("tlslayer: SelfSigned: no host names or addresses given")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("tlslayer: SelfSigned: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return "", "", fmt.Errorf("tlslayer: SelfSigned: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"pushwire"}, CommonName: hosts[0]},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", fmt.Errorf("tlslayer: SelfSigned: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("tlslayer: SelfSigned: %w", err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := writeFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	if err := writeFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// writeFile writes b to name with mode perm, also when name exists with another mode: it is
// written to a new file beside it and renamed over it, so a reader never sees half a file.
func writeFile(name string, b []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return fmt.Errorf("tlslayer: SelfSigned: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("tlslayer: SelfSigned: %s: %w", name, err)
	}
	return nil
}
