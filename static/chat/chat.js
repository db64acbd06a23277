// One chat: history with scroll-back, live messages, pending sends until acked,
// catch-up after reconnects, typing, presence and read receipts.
"use strict";

(() => {
  const chat = ChatClient.readJson("chat-data");
  const me = ChatClient.readJson("me");
  const maxBody = ChatClient.readJson("max-body");
  const PAGE = 50;
  const CATCH_UP_PAGE = 200;
  const TYPING_SEND_EVERY_MS = 3000;
  const TYPING_SHOW_MS = 4000;
  const RETRY_LATER_MS = 2000;

  const list = document.getElementById("messages");
  const scroller = document.getElementById("scroller");
  const olderButton = document.getElementById("load-older");
  const historyStart = document.getElementById("history-start");
  const form = document.getElementById("send-form");
  const input = document.getElementById("body");
  const counter = document.getElementById("counter");
  const typingLine = document.getElementById("typing");
  const readLine = document.getElementById("read-state");
  const membersLine = document.getElementById("members");

  const shown = new Map();     // message_id -> <li>
  const pending = new Map();   // client_msg_id -> { body, item }
  const presence = new Map();  // username -> { status, last_seen }
  const typing = new Map();    // username -> timer
  const readBy = new Map();    // username -> message_id
  let oldestId = null;
  let newestId = null;
  let lastTypingSent = 0;
  let lastReadSent = null;

  document.getElementById("chat-title").textContent =
    chat.kind === "group" ? chat.name : chat.members.filter((name) => name !== me).join(", ") || me;

  // Order of messages: by sent_at, then id; sent_at is ISO UTC with microseconds.
  const orderKey = (message) => `${message.sent_at}|${message.message_id}`;

  function renderMembers() {
    const parts = chat.members.map((name) => {
      if (name === me) return `${name} (you)`;
      const state = presence.get(name);
      if (!state) return name;
      if (state.status === "online") return `${name} ● online`;
      return state.last_seen ? `${name} (last seen ${ChatClient.formatTime(state.last_seen)})` : name;
    });
    membersLine.textContent = parts.join(" · ");
  }

  function messageItem(message, isPending) {
    const item = document.createElement("li");
    if (message.sender === me) item.classList.add("mine");
    if (isPending) item.classList.add("pending");
    const bubble = document.createElement("span");
    bubble.className = "bubble";
    bubble.textContent = message.body;
    const meta = document.createElement("span");
    meta.className = "meta";
    item.append(bubble, meta);
    setMeta(item, message, isPending ? "sending…" : null);
    return item;
  }

  function setMeta(item, message, note) {
    const meta = item.querySelector(".meta");
    const who = chat.kind === "group" && message.sender !== me ? `${message.sender} · ` : "";
    meta.textContent = note ? `${who}${note}` : `${who}${ChatClient.formatTime(message.sent_at)}`;
  }

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  }

  function place(message) {
    if (shown.has(message.message_id)) return false;
    const waiting = message.sender === me ? pending.get(message.client_msg_id) : undefined;
    if (waiting) {
      pending.delete(message.client_msg_id);
      waiting.item.remove();
    }
    const item = messageItem(message, false);
    item.dataset.key = orderKey(message);
    item.dataset.messageId = message.message_id;
    // Find the first shown message that sorts after this one (search from the end: usually it is newest).
    let next = null;
    for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
      if (!node.dataset.key) continue;  // pending items stay last
      if (node.dataset.key > item.dataset.key) next = node; else break;
    }
    if (next) list.insertBefore(item, next);
    else {
      const firstPending = list.querySelector("li.pending, li.failed");
      list.insertBefore(item, firstPending);
    }
    shown.set(message.message_id, item);
    if (oldestId === null || orderKey(message) < shown.get(oldestId).dataset.key) oldestId = message.message_id;
    if (newestId === null || orderKey(message) > shown.get(newestId).dataset.key) newestId = message.message_id;
    return true;
  }

  function showMessages(messages) {
    const stick = nearBottom();
    let added = 0;
    for (const message of messages) if (place(message)) added += 1;
    if (added && stick) scroller.scrollTop = scroller.scrollHeight;
    if (added) markRead();
    return added;
  }

  async function loadOlder() {
    olderButton.disabled = true;
    const before = oldestId ? `&before=${encodeURIComponent(oldestId)}` : "";
    try {
      const { messages } = await ChatClient.api("GET", `/api/chats/${chat.chat_id}/messages?limit=${PAGE}${before}`);
      const heightBefore = scroller.scrollHeight;
      const topBefore = scroller.scrollTop;
      for (const message of messages) place(message);
      // Keep the view where it was while older messages appear above it.
      if (oldestId && before) scroller.scrollTop = topBefore + (scroller.scrollHeight - heightBefore);
      const exhausted = messages.length < PAGE;
      olderButton.hidden = exhausted;
      historyStart.hidden = !exhausted;
      return messages.length;
    } finally {
      olderButton.disabled = false;
    }
  }

  // After a (re)connect: fetch whatever arrived while we were away, oldest first.
  async function catchUp() {
    await initialLoad;
    for (;;) {
      const after = newestId ? `&after=${encodeURIComponent(newestId)}` : "";
      const { messages } = await ChatClient.api(
        "GET", `/api/chats/${chat.chat_id}/messages?limit=${CATCH_UP_PAGE}${after}`);
      showMessages(messages);
      if (messages.length < CATCH_UP_PAGE || !after) break;
    }
  }

  function markRead() {
    if (!newestId || newestId === lastReadSent || document.hidden) return;
    const newest = shown.get(newestId);
    if (newest && newest.classList.contains("mine")) { lastReadSent = newestId; return; }
    if (socket.send({ type: "read", chat_id: chat.chat_id, message_id: newestId })) lastReadSent = newestId;
  }

  function renderReadState() {
    const readers = [];
    for (const [user, messageId] of readBy) {
      if (user !== me && messageId === newestId) readers.push(user);
    }
    readLine.textContent = readers.length ? `Seen by ${readers.join(", ")}` : "";
  }

  function renderTyping() {
    const names = [...typing.keys()];
    typingLine.textContent = names.length === 0 ? "" :
      `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
  }

  function sendPending(clientMsgId) {
    const entry = pending.get(clientMsgId);
    if (!entry) return;
    entry.item.classList.remove("failed");
    entry.item.classList.add("pending");
    setMeta(entry.item, { sender: me }, socket.isOpen ? "sending…" : "waiting for connection…");
    socket.send({ type: "send", chat_id: chat.chat_id, client_msg_id: clientMsgId, body: entry.body });
  }

  function failPending(clientMsgId, reason, retryable) {
    const entry = pending.get(clientMsgId);
    if (!entry) return;
    if (retryable) {
      setMeta(entry.item, { sender: me }, `${reason} – retrying…`);
      setTimeout(() => sendPending(clientMsgId), RETRY_LATER_MS);
      return;
    }
    entry.item.classList.remove("pending");
    entry.item.classList.add("failed");
    const meta = entry.item.querySelector(".meta");
    meta.textContent = `Not sent: ${reason} `;
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "link";
    retry.textContent = "Retry";
    retry.addEventListener("click", () => sendPending(clientMsgId));
    const drop = document.createElement("button");
    drop.type = "button";
    drop.className = "link";
    drop.textContent = " Discard";
    drop.addEventListener("click", () => { pending.delete(clientMsgId); entry.item.remove(); });
    meta.append(retry, drop);
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "message":
        if (frame.chat_id === chat.chat_id) {
          showMessages([frame]);
          renderReadState();
          // Their message has arrived: they are no longer typing it.
          if (typing.has(frame.sender)) {
            clearTimeout(typing.get(frame.sender));
            typing.delete(frame.sender);
            renderTyping();
          }
        }
        break;
      case "ack": {
        const entry = pending.get(frame.client_msg_id);
        if (entry) setMeta(entry.item, { sender: me }, "sent");
        break;
      }
      case "error":
        if (frame.client_msg_id && pending.has(frame.client_msg_id)) {
          const retryable = frame.code === "unavailable" || frame.code === "rate_limited";
          failPending(frame.client_msg_id, frame.message, retryable);
        }
        break;
      case "typing":
        if (frame.chat_id === chat.chat_id && frame.user !== me) {
          clearTimeout(typing.get(frame.user));
          typing.set(frame.user, setTimeout(() => { typing.delete(frame.user); renderTyping(); }, TYPING_SHOW_MS));
          renderTyping();
        }
        break;
      case "read":
        if (frame.chat_id === chat.chat_id) { readBy.set(frame.user, frame.message_id); renderReadState(); }
        break;
      case "presence":
        presence.set(frame.user, { status: frame.status, last_seen: frame.last_seen });
        renderMembers();
        break;
      default:
        break;
    }
  }

  const socket = new ChatClient.ReconnectingSocket({
    onFrame,
    onStatus: ChatClient.showStatus,
    onOpen: async () => {
      try { await catchUp(); } catch (error) { if (error.status === 401) window.location.href = "/login/"; }
      for (const clientMsgId of pending.keys()) sendPending(clientMsgId);
    },
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = input.value;
    if (!body.trim()) return;
    if (body.length > maxBody) { counter.textContent = `Too long: at most ${maxBody} characters.`; return; }
    const clientMsgId = ChatClient.newClientMsgId();
    const item = messageItem({ sender: me, body, sent_at: "" }, true);
    list.append(item);
    pending.set(clientMsgId, { body, item });
    input.value = "";
    counter.textContent = "";
    scroller.scrollTop = scroller.scrollHeight;
    sendPending(clientMsgId);
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });

  input.addEventListener("input", () => {
    const left = maxBody - input.value.length;
    counter.textContent = left < 200 ? `${left} characters left` : "";
    const now = Date.now();
    if (input.value && now - lastTypingSent > TYPING_SEND_EVERY_MS) {
      if (socket.send({ type: "typing", chat_id: chat.chat_id })) lastTypingSent = now;
    }
  });

  olderButton.addEventListener("click", loadOlder);
  scroller.addEventListener("scroll", () => {
    if (scroller.scrollTop < 40 && !olderButton.hidden && !olderButton.disabled) loadOlder();
  });
  document.addEventListener("visibilitychange", markRead);

  renderMembers();
  const initialLoad = loadOlder()
    .then(() => { scroller.scrollTop = scroller.scrollHeight; markRead(); })
    .catch((error) => { if (error.status === 401) window.location.href = "/login/"; });
  socket.start();
})();
