// Keeping the dashboard current. The websocket /api/me/live pushes a snapshot, then an
// update per change; while it cannot be held, /api/me/live/poll says which tabs changed
// and the page fetches them again (the fetches carry If-None-Match, see activity.js).
//
// Status: "connecting" → "live" (socket), "polling" (socket down, polls answer) or
// "offline" (neither answers). Socket retries back off exponentially with jitter.

export const TABS = ["sessions", "tokens", "queries", "sync", "blocks"];

const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 15000;
const SNAPSHOT_WAIT_MS = 10000; // an open socket that sends no snapshot is not working
const SILENCE_MS = 60000; // the server pings every 25 s; twice that and more is a dead socket
const POLL_SECONDS = 25;

/** Exponential backoff with "equal jitter": half the step fixed, half random. */
export function backoff(attempt) {
  const step = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** attempt);
  return step / 2 + Math.random() * (step / 2);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Live {
  /**
   * @param {object} hooks
   *   tz: IANA zone sent to the socket (its tokens tab counts days in it)
   *   onTabs(tabs, isSnapshot): tab payloads pushed over the socket
   *   onChanged(names): fetch these tabs again (polling); resolves when done
   *   onStatus(mode), onHeard(): the indicator
   *   onSignedOut(): the session is gone
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.version = null;
    this.socket = null;
    this.attempts = 0;
    this.retryTimer = null;
    this.polling = 0; // the running poll loop's number; 0: none
    this.lastHeard = 0;
    this.mode = null;
  }

  start() {
    this.connect();
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) {
        this.pollAbort?.abort(); // polling pauses while nobody looks
      } else {
        this.wakeUp?.();
        if (!this.socket) this.connectSoon(0);
      }
    });
    window.addEventListener("online", () => !this.socket && this.connectSoon(0));
    setInterval(() => {
      if (this.mode === "live" && Date.now() - this.lastHeard > SILENCE_MS) this.socket?.close();
    }, 5000);
  }

  status(mode) {
    if (mode !== this.mode) {
      this.mode = mode;
      this.hooks.onStatus(mode);
    }
  }

  heard() {
    this.lastHeard = Date.now();
    this.hooks.onHeard();
  }

  connect() {
    this.retryTimer = null;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/api/me/live?tz=${encodeURIComponent(this.hooks.tz)}`;
    let socket;
    try {
      socket = new WebSocket(url);
    } catch {
      this.lost(null);
      return;
    }
    this.socket = socket;
    let synced = false;
    let resyncing = false;
    const noSnapshot = setTimeout(() => socket.close(), SNAPSHOT_WAIT_MS);

    socket.onmessage = (event) => {
      if (this.socket !== socket) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.heard();
      if (message.type === "ping") {
        socket.send(JSON.stringify({ type: "pong" }));
      } else if (message.type === "snapshot") {
        clearTimeout(noSnapshot);
        synced = true;
        resyncing = false;
        this.attempts = 0;
        this.version = message.version;
        this.stopPolling();
        this.status("live");
        this.hooks.onTabs(message.tabs, true);
      } else if (message.type === "update" && synced && !resyncing) {
        if (message.version <= this.version) return; // already have it
        if (message.version !== this.version + 1) {
          resyncing = true; // missed one: ask for a snapshot, ignore updates until it comes
          socket.send(JSON.stringify({ type: "resync" }));
          return;
        }
        this.version = message.version;
        this.hooks.onTabs(message.tabs, false);
      }
    };
    socket.onclose = (event) => {
      clearTimeout(noSnapshot);
      if (this.socket === socket) this.lost(event.code);
    };
  }

  lost(code) {
    this.socket = null;
    if (code === 4401) this.hooks.onSignedOut();
    this.startPolling();
    this.connectSoon(backoff(this.attempts++));
  }

  connectSoon(delay) {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  stopPolling() {
    this.polling = 0;
    this.pollAbort?.abort();
  }

  startPolling() {
    if (this.polling) return;
    this.polling = Math.random() + 1;
    this.status(this.mode === "offline" ? "offline" : "polling");
    this.pollLoop(this.polling);
  }

  async pollLoop(loop) {
    const running = () => this.polling === loop;
    let failures = 0;
    let fetchAll = this.version === null; // never synced: load everything first
    while (running()) {
      if (document.hidden) {
        await new Promise((resolve) => (this.wakeUp = resolve));
        continue;
      }
      const abort = new AbortController();
      this.pollAbort = abort;
      try {
        if (fetchAll) {
          await this.hooks.onChanged(TABS);
          fetchAll = false;
        }
        const since = this.version ?? 0;
        const response = await fetch(`/api/me/live/poll?since=${since}&timeout=${POLL_SECONDS}`, {
          signal: abort.signal,
          cache: "no-store",
        });
        if (response.status === 401) return this.hooks.onSignedOut();
        if (response.status === 200) {
          const changes = await response.json();
          await this.hooks.onChanged(changes.changed);
          if (!running()) return;
          this.version = changes.version;
        } else if (response.status !== 204) {
          throw new Error(`poll answered ${response.status}`);
        }
        if (!running()) return;
        failures = 0;
        this.heard();
        this.status("polling");
      } catch {
        if (!running()) return;
        if (abort.signal.aborted) continue; // the page was hidden
        this.status("offline");
        await sleep(backoff(failures++));
      }
    }
  }
}
