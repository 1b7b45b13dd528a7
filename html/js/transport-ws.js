// The WebSocket transport of ChatClient (PROTOCOL.md section 4).
//
// A transport is one connection attempt. ChatClient makes a new one for
// every (re)connect (WebSocket or HTTP fallback, or through its
// `transport` option's factory) and only uses:
//
//   t.connect(token)    open and authenticate
//   t.send(obj)         send one protocol object; false if it cannot
//   t.close()           give up the connection (no more callbacks)
//   t.onmessage(obj)    each server object (`ready` first, after auth)
//   t.onclose({code, reason, opened})
//                       once, when the connection is gone; `opened` is
//                       false when it never got as far as an open socket
//                       (ChatClient counts those: the HTTP fallback is
//                       chosen after repeated upgrade failures)
//
//   t.kind              'ws' (ChatClient's `transportKind`)
//
// The HTTP fallback (transport-http.js: GET /v1/events, POST
// /v1/send|ack|read|presence) has the same members (kind 'http'): it
// authenticates with a Bearer header instead of an `auth` message.

export class WebSocketTransport {
    constructor(url) {
        this.kind = 'ws';
        this.url = url;
        this.ws = null;
        this.opened = false;
        this.closed = false;
        this.onmessage = () => {};
        this.onclose = () => {};
    }

    connect(token) {
        let ws;
        try {
            ws = new WebSocket(this.url);
        } catch (e) {
            queueMicrotask(() => this._closed(1006, String(e)));
            return;
        }
        this.ws = ws;
        ws.onopen = () => {
            this.opened = true;
            ws.send(JSON.stringify({ type: 'auth', token }));
        };
        ws.onmessage = e => {
            if (this.closed || typeof e.data !== 'string') {
                return;
            }
            let obj;
            try {
                obj = JSON.parse(e.data);
            } catch {
                return;
            }
            this.onmessage(obj);
        };
        ws.onclose = e => this._closed(e.code, e.reason);
    }

    send(obj) {
        if (this.closed || !this.ws || this.ws.readyState !== WebSocket.OPEN) {
            return false;
        }
        this.ws.send(JSON.stringify(obj));
        return true;
    }

    close() {
        this.closed = true;
        if (this.ws) {
            try {
                this.ws.close(1000);
            } catch {
                // already closing
            }
        }
    }

    _closed(code, reason) {
        if (this.closed) {
            return;
        }
        this.closed = true;
        this.onclose({ code, reason, opened: this.opened });
    }
}
