// pushwire.js: the pushwire wire protocol (docs/protocol.md, version 1) for JavaScript clients —
// a frame encoder and decoder, the connect sign's message, and the client flow the integration
// tests run: POST /v1/connect, a WebSocket to the endpoint given, LOGIN, PINGs at the heartbeat,
// and PUSH_ACK for every push with the ACK flag. It has no dependencies and runs unchanged in a
// browser (a classic <script>: window.pushwire) and in Node.js (require('./pushwire.js')); the
// runtime-specific parts (WebSocket, fetch, the HMAC) are passed in by the caller.
(function (root, factory) {
  if (typeof module === 'object' && module.exports) {
    module.exports = factory();
  } else {
    root.pushwire = factory();
  }
})(typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  const MAGIC0 = 0x50; // 'P'
  const MAGIC1 = 0x57; // 'W'
  const VERSION = 1;
  const HEADER_LEN = 18;
  const MAX_META = 4096;

  const Type = Object.freeze({
    LOGIN: 0x01, LOGIN_ACK: 0x02, PING: 0x03, PONG: 0x04, REQUEST: 0x05, RESPONSE: 0x06,
    PUSH: 0x07, PUSH_ACK: 0x08, JOIN: 0x09, LEAVE: 0x0a, GOAWAY: 0x0b, ERROR: 0x0c,
  });
  const FLAG_ACK = 0x01;
  const CodeNames = ['OK', 'BAD_FRAME', 'UNSUPPORTED_VERSION', 'FRAME_TOO_LARGE', 'NOT_LOGGED_IN',
    'AUTH_FAILED', 'UNKNOWN_BIZ', 'BUSY', 'BACKEND_ERROR', 'BACKEND_TIMEOUT', 'RATE_LIMITED',
    'FORBIDDEN', 'LOGIN_TIMEOUT', 'IDLE_TIMEOUT', 'EVICTED', 'SHUTTING_DOWN', 'SLOW_CONSUMER',
    'OVERLOADED'];
  const TypeNames = {};
  for (const k of Object.keys(Type)) TypeNames[Type[k]] = k;

  const utf8 = new TextEncoder();
  const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

  function bytes(v) {
    if (v === undefined || v === null) return new Uint8Array(0);
    if (typeof v === 'string') return utf8.encode(v);
    if (v instanceof Uint8Array) return v;
    if (v instanceof ArrayBuffer) return new Uint8Array(v);
    if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    throw new TypeError('pushwire: want a string or bytes, got ' + typeof v);
  }

  // encode returns one frame as a Uint8Array. f: {type, flags, code, biz, seq, meta, body};
  // meta is an array of [key, value] pairs (kept in order) or an object; values are strings or
  // bytes; body is a string or bytes.
  function encode(f) {
    const entries = Array.isArray(f.meta) ? f.meta : Object.entries(f.meta || {});
    const seen = new Set();
    const parts = [];
    let metaLen = 0;
    for (const [k, v] of entries) {
      const kb = utf8.encode(k);
      const vb = bytes(v);
      if (kb.length < 1 || kb.length > 255) throw new RangeError('pushwire: meta key "' + k + '": 1..255 bytes');
      if (vb.length > 0xffff) throw new RangeError('pushwire: meta "' + k + '": value over 65535 bytes');
      if (seen.has(k)) throw new RangeError('pushwire: meta key "' + k + '" twice');
      seen.add(k);
      parts.push([kb, vb]);
      metaLen += 1 + kb.length + 2 + vb.length;
    }
    if (metaLen > MAX_META) throw new RangeError('pushwire: meta of ' + metaLen + ' bytes, at most ' + MAX_META);
    const body = bytes(f.body);
    const out = new Uint8Array(HEADER_LEN + metaLen + body.length);
    const dv = new DataView(out.buffer);
    out[0] = MAGIC0;
    out[1] = MAGIC1;
    out[2] = VERSION;
    out[3] = f.type;
    out[4] = f.flags || 0;
    out[5] = f.code || 0;
    dv.setUint16(6, f.biz || 0);
    dv.setUint32(8, (f.seq || 0) >>> 0);
    dv.setUint16(12, metaLen);
    dv.setUint32(14, body.length);
    let off = HEADER_LEN;
    for (const [kb, vb] of parts) {
      out[off++] = kb.length;
      out.set(kb, off);
      off += kb.length;
      dv.setUint16(off, vb.length);
      off += 2;
      out.set(vb, off);
      off += vb.length;
    }
    out.set(body, off);
    return out;
  }

  // decode parses exactly one whole frame (a WebSocket message carries one). It throws on a bad
  // magic or version, lengths that do not match the data, or malformed meta. The result's meta is
  // a Map of key to Uint8Array; metaString(f, key) reads one as text.
  function decode(data) {
    const b = bytes(data);
    if (b.length < HEADER_LEN) throw new RangeError('pushwire: frame of ' + b.length + ' bytes, shorter than the header');
    if (b[0] !== MAGIC0 || b[1] !== MAGIC1) throw new RangeError('pushwire: bad magic');
    if (b[2] !== VERSION) throw new RangeError('pushwire: version ' + b[2]);
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const metaLen = dv.getUint16(12);
    const bodyLen = dv.getUint32(14);
    if (metaLen > MAX_META) throw new RangeError('pushwire: meta length ' + metaLen + ' over ' + MAX_META);
    if (HEADER_LEN + metaLen + bodyLen !== b.length) {
      throw new RangeError('pushwire: header says ' + (HEADER_LEN + metaLen + bodyLen) + ' bytes, message has ' + b.length);
    }
    const meta = new Map();
    let off = HEADER_LEN;
    const end = HEADER_LEN + metaLen;
    while (off < end) {
      const kl = b[off++];
      if (kl === 0 || off + kl + 2 > end) throw new RangeError('pushwire: malformed meta');
      const k = utf8Decoder.decode(b.subarray(off, off + kl));
      off += kl;
      const vl = dv.getUint16(off);
      off += 2;
      if (off + vl > end) throw new RangeError('pushwire: malformed meta');
      if (meta.has(k)) throw new RangeError('pushwire: meta key "' + k + '" twice');
      meta.set(k, b.subarray(off, off + vl));
      off += vl;
    }
    return {
      type: b[3], flags: b[4], code: b[5], biz: dv.getUint16(6), seq: dv.getUint32(8),
      meta: meta, body: b.subarray(end),
    };
  }

  function metaString(f, key) {
    const v = f.meta.get(key);
    return v === undefined ? undefined : utf8Decoder.decode(v);
  }

  function text(b) {
    return utf8Decoder.decode(bytes(b));
  }

  function describe(f) {
    const name = TypeNames[f.type] || ('type 0x' + f.type.toString(16));
    const code = CodeNames[f.code] || String(f.code);
    const msg = metaString(f, 'msg');
    return name + ' ' + code + (msg ? ' (' + msg + ')' : '');
  }

  // signMessage is what the connect sign is the HMAC-SHA256 of (keyed with the app's secret):
  // app, device, user and ts (decimal) joined by "\n"; the sign is its lowercase hex.
  function signMessage(app, device, user, ts) {
    return app + '\n' + device + '\n' + user + '\n' + String(ts);
  }

  function hex(buf) {
    return Array.from(bytes(buf), (x) => x.toString(16).padStart(2, '0')).join('');
  }

  // textProbe opens a WebSocket to url (o.WebSocket) and sends one text message: the protocol
  // carries frames in binary messages only, so the gateway answers ERROR BAD_FRAME and closes
  // (status 1003, unsupported data). It resolves with what came back: the frames (type, code,
  // msg), the close status and reason; it rejects if the connection is not closed within 10 s.
  function textProbe(o, url) {
    return new Promise((resolve, reject) => {
      const ws = new o.WebSocket(url);
      ws.binaryType = 'arraybuffer';
      const frames = [];
      const timer = setTimeout(() => {
        ws.onclose = null;
        ws.close();
        reject(new Error('text probe: the gateway did not close within 10 s; got ' + JSON.stringify(frames)));
      }, 10000);
      ws.onopen = () => ws.send('LOGIN as text');
      ws.onmessage = (ev) => {
        if (typeof ev.data === 'string') {
          frames.push({ text: ev.data });
          return;
        }
        try {
          const f = decode(ev.data);
          frames.push({ type: TypeNames[f.type] || f.type, code: CodeNames[f.code] || f.code, msg: metaString(f, 'msg') || '' });
        } catch (err) {
          frames.push({ error: err.message });
        }
      };
      ws.onerror = () => {}; // the close event follows with its status
      ws.onclose = (ev) => {
        clearTimeout(timer);
        resolve({ frames: frames, closeCode: ev.code, closeReason: ev.reason });
      };
    });
  }

  // run is one client's whole flow. o: {
  //   control: the control layer's base URL, app, secret, device, user, platform, network,
  //   wsPath ("/ws" by default), fetch, WebSocket (a constructor with the browser's API),
  //   hmac(secret, message) → Promise of the lowercase hex HMAC-SHA256,
  //   report(step, detail) → Promise (progress for the test), pushes (how many to take; 1)
  // }. It resolves with {url, pushes}: the WebSocket URL it used and the pushes received ({biz,
  // id, seq, ack, body}) once it has taken o.pushes of them and acknowledged those that asked for
  // it, and rejects on any failure.
  async function run(o) {
    const report = o.report || (async () => {});
    const user = o.user || '';
    const ts = Math.floor(Date.now() / 1000);
    const sign = await o.hmac(o.secret, signMessage(o.app, o.device, user, ts));
    const res = await o.fetch(o.control.replace(/\/$/, '') + '/v1/connect', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        app: o.app, device: o.device, user: user, platform: o.platform || 'web',
        network: o.network || 'wifi', sdk: o.sdk || 'pushwire.js/1', ts: ts, sign: sign,
      }),
    });
    const answer = await res.json();
    if (res.status !== 200) {
      throw new Error('connect: HTTP ' + res.status + ': ' + JSON.stringify(answer));
    }
    const ep = (answer.endpoints || []).find((e) => e.protocol === 'ws');
    if (!ep) throw new Error('connect: no ws endpoint in ' + JSON.stringify(answer.endpoints));
    const url = 'ws://' + ep.addr + (o.wsPath || '/ws');
    await report('connected', { url: url, endpoints: answer.endpoints, reason: answer.reason || '' });

    const want = o.pushes || 1;
    const ws = new o.WebSocket(url);
    ws.binaryType = 'arraybuffer';
    let seq = 0;
    let pinger = null;
    const got = [];
    try {
      await new Promise((resolve, reject) => {
        let loggedIn = false;
        const fail = (err) => reject(err instanceof Error ? err : new Error(String(err)));
        ws.onerror = (ev) => fail('websocket error' + (ev && ev.message ? ': ' + ev.message : ''));
        ws.onclose = (ev) => fail('websocket closed: code ' + ev.code + (ev.reason ? ' ' + ev.reason : '') +
          ' after ' + got.length + ' pushes');
        ws.onopen = () => {
          ws.send(encode({
            type: Type.LOGIN, seq: ++seq,
            meta: [['token', answer.token], ['device', o.device], ['app', o.app],
              ['platform', o.platform || 'web'], ['sdk', o.sdk || 'pushwire.js/1']],
          }));
        };
        ws.onmessage = (ev) => {
          if (typeof ev.data === 'string') {
            fail('a text message from the gateway');
            return;
          }
          let f;
          try {
            f = decode(ev.data);
          } catch (err) {
            fail(err);
            return;
          }
          switch (f.type) {
            case Type.LOGIN_ACK: {
              if (f.code !== 0) {
                fail('login: ' + describe(f));
                return;
              }
              loggedIn = true;
              const hb = Number(metaString(f, 'hb')) || answer.heartbeat_s || 30;
              pinger = setInterval(() => ws.send(encode({ type: Type.PING, seq: ++seq })), hb * 1000);
              report('logged-in', { conn: metaString(f, 'conn'), node: metaString(f, 'node'), hb: hb })
                .catch(fail);
              return;
            }
            case Type.PONG:
              return;
            case Type.PUSH: {
              if (!loggedIn) {
                fail('a push before LOGIN_ACK');
                return;
              }
              const ack = (f.flags & FLAG_ACK) !== 0;
              const id = metaString(f, 'id');
              if (ack) {
                ws.send(encode({ type: Type.PUSH_ACK, biz: f.biz, meta: [['id', f.meta.get('id') || '']] }));
              }
              got.push({ biz: f.biz, id: id, seq: f.seq, ack: ack, body: text(f.body) });
              if (got.length >= want) resolve();
              return;
            }
            default:
              fail('unexpected ' + describe(f));
          }
        };
      });
    } finally {
      if (pinger !== null) clearInterval(pinger);
      ws.onclose = null;
      ws.onerror = null;
      ws.onmessage = null;
    }
    // A normal close after the last PUSH_ACK: the acks are sent before the close frame.
    // Bounded: a gateway that never answers the close frame does not hold the flow.
    await new Promise((resolve) => {
      if (ws.readyState === 3) {
        resolve();
        return;
      }
      const timer = setTimeout(resolve, 5000);
      ws.onclose = () => {
        clearTimeout(timer);
        resolve();
      };
      ws.close(1000, 'done');
    });
    return { url: url, pushes: got };
  }

  return {
    Type: Type, FLAG_ACK: FLAG_ACK, CodeNames: CodeNames, HEADER_LEN: HEADER_LEN,
    encode: encode, decode: decode, metaString: metaString, text: text, describe: describe,
    signMessage: signMessage, hex: hex, run: run, textProbe: textProbe,
  };
});
