// The HTTP fallback transport of ChatClient, for networks that refuse
// WebSockets (docs/protocol.md, "HTTP fallback transport"): long-polls of
// GET /v1/events for what the server sends, POST /v1/send, /v1/read and
// /v1/presence for what the client sends. It has the members of
// transport-ws.js (`kind` is 'http'), so ChatClient sees the same objects
// either way:
//
// - `ready` is made here when the first poll answers (long-polls carry
//   none). Until the sync is over the polls do not wait (`wait=0`): a
//   sync page without `synced` is followed by the next at once, and a
//   poll that brings no `msg`, `expired` or `synced` means the sync is
//   over (a poll leaves out an empty `synced`): `synced` is made here.
//   Then the polls wait WAIT seconds.
// - Acks ride on the next poll (`?ack=<chat_id>:<seq>,...`): that poll
//   waits until ChatClient has acked what the previous answer brought
//   (it stores a message before it acks it), at most ACK_WAIT ms; past
//   that the server sends the unacked messages again and ChatClient drops
//   them by (chat_id, seq).
// - Presence: a subscribe is a POST (the current states come back), then
//   every poll names the watched users with what the client knows of
//   each (`?presence=<id>:on|off|<last_seen>`), so a change between two
//   polls is not lost. A subscribe that adds users ends the poll under
//   way (aborted; nothing is lost, its answer comes again) so that the
//   next one watches them. A poll refused (403: a watched user shares no
//   chat any more) ends the transport; ChatClient subscribes anew.
// - Sends go one at a time: each POST /v1/send after the previous one
//   was answered. Each call is a session of its own on the server, so
//   calls under way together (ChatClient flushes its whole outbox on
//   `ready`) are stored in whatever order the server takes them; one at
//   a time, they are stored in the order ChatClient sent them, as on a
//   WebSocket.
// - `ping` is answered here: a failed poll (or one unanswered for
//   WAIT + 10 s) is what tells of a dead connection.
// - `opened` (for ChatClient's onclose) is true once a poll answered:
//   false means the server could not be reached over HTTP either.

const WAIT = 25;                // seconds a poll waits on the server
const ACK_WAIT = 2000;          // ms a poll waits for the previous acks
const POLL_TIMEOUT = (WAIT + 10) * 1000;

export class HttpTransport {
    constructor(baseUrl, account) {
        this.kind = 'http';
        this.base = baseUrl.replace(/\/$/, '');
        this.account = account;
        this.opened = false;
        this.closed = false;
        this.onmessage = () => {};
        this.onclose = () => {};
        this.token = null;
        this.abort = new AbortController();
        this.acks = new Map();          // chat_id -> seq, not yet on a poll
        this.owed = new Map();          // chat_id -> seq of the last answer
        this.known = new Map();         // user_id -> 'on' | 'off' | ms
        this._ackWaiter = null;
        this._pollAbort = null;         // the poll under way, while it waits
        this._restart = false;          // ... was ended for a new one
        this._sends = Promise.resolve(); // POST /v1/send, one at a time
    }

    connect(token) {
        this.token = token;
        this._loop();
    }

    send(obj) {
        if (this.closed || !this.opened) {
            return false;
        }
        switch (obj.type) {
        case 'ack':
            if ((this.acks.get(obj.chat_id) || 0) < obj.seq) {
                this.acks.set(obj.chat_id, obj.seq);
            }
            this._acked();
            return true;
        case 'ping':
            queueMicrotask(() => this._emit({ type: 'pong', t: obj.t }));
            return true;
        case 'presence':
            this._presence(obj);
            return true;
        case 'send':
            // after the previous send's answer (once the transport has
            // failed, ChatClient sends its outbox again on the next one)
            this._sends = this._sends.then(() => this.closed
                                           ? undefined : this._call(obj));
            return true;
        case 'read':
            this._call(obj);
            return true;
        default:
            return false;
        }
    }

    close() {
        this.closed = true;
        this.abort.abort();
        if (this._ackWaiter) {
            this._ackWaiter();
        }
    }

    // ------------------------------------------------------------------

    async _loop() {
        let first = true;
        let synced = false;
        while (!this.closed) {
            if (!first) {
                await this._waitForAcks();
                if (this.closed) {
                    return;
                }
            }
            let answer;
            const acks = new Map(this.acks);
            try {
                answer = await this._poll(synced ? WAIT : 0, acks);
            } catch (e) {
                if (this._restart && !this.closed) {
                    this._restart = false;  // the acks stay for the next
                    continue;
                }
                this._fail(e);
                return;
            }
            this._restart = false;  // (too late to end it: it answered)
            // the acks went with the poll: keep only those raised since
            for (const [chat, seq] of acks) {
                if (this.acks.get(chat) === seq) {
                    this.acks.delete(chat);
                }
            }
            if (first) {
                this.opened = true;
                this._emit({ type: 'ready', user_id: this.account.user_id,
                             device_id: this.account.device_id,
                             server_time: Date.now() });
                first = false;
            }
            this.owed.clear();
            for (const obj of answer) {
                if (obj.type === 'msg') {
                    this.owed.set(obj.chat_id, obj.seq);
                } else if (obj.type === 'expired') {
                    this.owed.set(obj.chat_id, obj.to_seq);
                } else if (obj.type === 'presence') {
                    this._know(obj);
                }
                this._emit(obj);
            }
            if (!synced) {
                if (answer.some(o => o.type === 'synced')) {
                    synced = true;
                } else if (!answer.some(o => o.type === 'msg'
                                             || o.type === 'expired')) {
                    synced = true;
                    this._emit({ type: 'synced', count: 0 });
                }
            }
        }
    }

    async _poll(wait, acks) {
        const q = new URLSearchParams({ wait: String(wait) });
        if (acks.size) {
            q.set('ack', [...acks].map(([c, s]) => `${c}:${s}`).join(','));
        }
        if (this.known.size) {
            q.set('presence', [...this.known]
                .map(([u, k]) => `${u}:${k}`).join(','));
        }
        const abort = new AbortController();
        this._pollAbort = wait ? abort : null;
        let body;
        try {
            const res = await this._fetch('GET', `/v1/events?${q}`, null,
                                          POLL_TIMEOUT, abort.signal);
            body = await res.json();
        } finally {
            this._pollAbort = null;
        }
        if (!Array.isArray(body)) {
            throw Object.assign(new Error('not an array'), { code: 1006 });
        }
        return body;
    }

    // the next poll goes once ChatClient acked the last answer's messages
    _waitForAcks() {
        if (this._covered()) {
            return Promise.resolve();
        }
        return new Promise(resolve => {
            const timer = setTimeout(done, ACK_WAIT);
            const self = this;
            function done() {
                clearTimeout(timer);
                self._ackWaiter = null;
                resolve();
            }
            this._ackWaiter = done;
        });
    }

    _acked() {
        if (this._ackWaiter && this._covered()) {
            this._ackWaiter();
        }
    }

    _covered() {
        for (const [chat, seq] of this.owed) {
            if ((this.acks.get(chat) || 0) < seq) {
                return false;
            }
        }
        return true;
    }

    _know(p) {
        this.known.set(p.user_id, p.online ? 'on'
                                           : (p.last_seen || 'off'));
    }

    async _presence(obj) {
        try {
            const res = await this._fetch('POST', '/v1/presence', obj);
            const states = await res.json();
            let added = false;
            for (const p of states) {
                added = added || !this.known.has(p.user_id);
                this._know(p);
                this._emit(p);
            }
            if (obj.unsubscribe) {
                for (const u of obj.unsubscribe) {
                    this.known.delete(u);
                }
            }
            if (added && this._pollAbort && !this.closed) {
                // the waiting poll does not watch them: a new one will
                this._restart = true;
                this._pollAbort.abort();
            }
        } catch (e) {
            this._answerError(obj, e);
        }
    }

    async _call(obj) {
        try {
            const res = await this._fetch('POST', `/v1/${obj.type}`, obj);
            if (res.status === 200) {
                this._emit(await res.json());
            }
        } catch (e) {
            this._answerError(obj, e);
        }
    }

    // an HTTP error is the WebSocket's `error`; a broken connection ends
    // the transport (ChatClient reconnects and resends its outbox)
    _answerError(obj, e) {
        if (e.apiCode && e.status !== 401 && e.status !== 503) {
            this._emit({ type: 'error', id: obj.id, code: e.apiCode,
                         message: e.message });
            return;
        }
        this._fail(e);
    }

    async _fetch(method, path, body, timeout = 15000, signal = null) {
        const abort = new AbortController();
        const onAbort = () => abort.abort();
        this.abort.signal.addEventListener('abort', onAbort);
        if (signal) {
            signal.addEventListener('abort', onAbort);
        }
        const timer = setTimeout(() => abort.abort(), timeout);
        try {
            const res = await fetch(this.base + path, {
                method,
                headers: {
                    Authorization: `Bearer ${this.token}`,
                    ...(body ? { 'Content-Type': 'application/json' } : {}),
                },
                body: body ? JSON.stringify(body) : undefined,
                cache: 'no-store',
                signal: abort.signal,
            });
            if (res.status >= 400) {
                let code = 'unavailable';
                let message = `HTTP ${res.status}`;
                try {
                    const j = await res.json();
                    code = j.error.code;
                    message = j.error.message;
                } catch {
                    // not our JSON (a proxy's page)
                }
                throw Object.assign(new Error(message),
                                    { status: res.status, apiCode: code });
            }
            return res;
        } finally {
            clearTimeout(timer);
            this.abort.signal.removeEventListener('abort', onAbort);
            if (signal) {
                signal.removeEventListener('abort', onAbort);
            }
        }
    }

    _emit(obj) {
        if (!this.closed) {
            this.onmessage(obj);
        }
    }

    _fail(e) {
        if (this.closed) {
            return;
        }
        this.closed = true;
        this.abort.abort();
        const code = e.status === 401 ? 4001
                   : e.status === 503 ? 1013 : 1006;
        this.onclose({ code, reason: e.message, opened: this.opened });
    }
}
