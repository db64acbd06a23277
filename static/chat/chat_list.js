// The chat list: unread counts and last messages, refreshed live.
"use strict";

(() => {
  const me = ChatClient.readJson("me");
  const list = document.getElementById("chat-list");
  const empty = document.getElementById("chat-list-empty");
  const formError = document.getElementById("form-error");

  function chatTitle(chat) {
    if (chat.kind === "group") return chat.name;
    const others = chat.members.filter((name) => name !== me);
    return others.length ? others.join(", ") : me;
  }

  function render(chats) {
    list.replaceChildren();
    empty.hidden = chats.length > 0;
    for (const chat of chats) {
      const item = document.createElement("li");
      item.dataset.chatId = String(chat.chat_id);
      const link = document.createElement("a");
      link.href = `/chats/${chat.chat_id}/`;
      const title = document.createElement("span");
      title.className = "title";
      title.textContent = chatTitle(chat);
      const preview = document.createElement("span");
      preview.className = "preview";
      preview.textContent = chat.last_message
        ? `${chat.last_message.sender}: ${chat.last_message.body}`
        : (chat.kind === "group" ? `Group · ${chat.members.join(", ")}` : "No messages yet");
      link.append(title, preview);
      if (chat.unread > 0) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = chat.unread > 998 ? "999+" : String(chat.unread);
        badge.setAttribute("aria-label", `${chat.unread} unread`);
        link.append(badge);
      }
      item.append(link);
      list.append(item);
    }
  }

  let refreshTimer = null;
  function refreshSoon() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, 150);
  }

  async function refresh() {
    try {
      render((await ChatClient.api("GET", "/api/chats")).chats);
    } catch (error) {
      if (error.status === 401) window.location.href = "/login/";
    }
  }

  async function openChat(body) {
    formError.hidden = true;
    try {
      const chat = await ChatClient.api("POST", "/api/chats", body);
      window.location.href = `/chats/${chat.chat_id}/`;
    } catch (error) {
      formError.textContent = error.message;
      formError.hidden = false;
    }
  }

  document.getElementById("direct-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const username = event.target.elements.username.value.trim();
    openChat({ kind: "direct", members: [username] });
  });

  document.getElementById("group-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const members = event.target.elements.members.value
      .split(",").map((name) => name.trim()).filter(Boolean);
    openChat({ kind: "group", name: event.target.elements.name.value, members });
  });

  const socket = new ChatClient.ReconnectingSocket({
    onStatus: ChatClient.showStatus,
    onOpen: refresh,
    onFrame: (frame) => { if (frame.type === "message" || frame.type === "read") refreshSoon(); },
  });
  refresh();
  socket.start();
})();
