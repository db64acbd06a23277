// The browser side of the chat protocol: REST helpers and a WebSocket that
// reconnects by itself (asking service discovery again, backing off with jitter).
"use strict";

const ChatClient = (() => {
  function readJson(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  async function api(method, path, body) {
    const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.headers["X-CSRFToken"] = csrfToken();
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    let data = null;
    try { data = await response.json(); } catch (_) { /* not JSON: keep null */ }
    if (!response.ok) {
      const message = data && data.error ? data.error.message : `HTTP ${response.status}`;
      const error = new Error(message);
      error.status = response.status;
      error.code = data && data.error ? data.error.code : "http_error";
      throw error;
    }
    return data;
  }

  function newClientMsgId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  const HEARTBEAT_MS = 30000;
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_MAX_MS = 30000;

  // Keeps one live WebSocket. onOpen runs after every (re)connect, so callers
  // can catch up with ?after= and resend what was never acked.
  class ReconnectingSocket {
    constructor({ onFrame, onOpen, onStatus }) {
      this.onFrame = onFrame;
      this.onOpen = onOpen || (() => {});
      this.onStatus = onStatus || (() => {});
      this.attempt = 0;
      this.ws = null;
      this.heartbeat = null;
      this.stopped = false;
    }

    start() { this.connect(); }

    stop() {
      this.stopped = true;
      if (this.ws) this.ws.close();
    }

    get isOpen() { return this.ws !== null && this.ws.readyState === WebSocket.OPEN; }

    send(frame) {
      if (!this.isOpen) return false;
      this.ws.send(JSON.stringify(frame));
      return true;
    }

    async connect() {
      if (this.stopped) return;
      this.onStatus("connecting");
      let url;
      try {
        url = (await api("GET", "/api/servers/assign")).ws_url;
      } catch (error) {
        if (error.status === 401) { window.location.href = "/login/"; return; }
        this.scheduleReconnect();
        return;
      }
      const ws = new WebSocket(url);
      this.ws = ws;
      ws.onopen = () => {
        this.attempt = 0;
        this.onStatus("online");
        this.heartbeat = setInterval(() => this.send({ type: "heartbeat" }), HEARTBEAT_MS);
        this.onOpen();
      };
      ws.onmessage = (event) => {
        let frame;
        try { frame = JSON.parse(event.data); } catch (_) { return; }
        this.onFrame(frame);
      };
      ws.onclose = () => {
        clearInterval(this.heartbeat);
        if (this.ws === ws) this.ws = null;
        this.scheduleReconnect();
      };
    }

    scheduleReconnect() {
      if (this.stopped) return;
      this.onStatus("offline");
      const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
      this.attempt += 1;
      // Equal jitter: spread reconnects so a restarted server is not stampeded.
      const delay = ceiling / 2 + Math.random() * (ceiling / 2);
      setTimeout(() => this.connect(), delay);
    }
  }

  function showStatus(state) {
    const node = document.getElementById("connection-status");
    if (!node) return;
    const labels = { connecting: "connecting…", online: "● live", offline: "reconnecting…" };
    node.textContent = labels[state] || state;
    node.className = `status ${state}`;
  }

  function formatTime(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
  }

  return { api, readJson, newClientMsgId, ReconnectingSocket, showStatus, formatTime };
})();
