// The playground page: five chats fed by server-sent events, and the time-travel controls.
// Everything goes through the playground server (/api/...), never to the emulator itself.
"use strict";

const state = {
  language: "fr",
  strings: {},
  chats: [], // [{key, writable, name}] from the page's UI data
  messages: {}, // chat key -> Map(message id -> message as last drawn), to redraw in a new language
  clock: null, // the last clock state from the server
  ready: false,
  connection: "connecting",
  travelling: false,
  pressing: new Set(), // "chat:message id" of presses on their way to the bot
  historyLimit: Infinity, // messages kept per chat, as the server keeps them
};

const TRAVELS = ["reminder", "workshop-end", "survey-close", "hour", "day"];
const TARGETS = ["reminder", "workshop-end", "survey-close"];
const TOAST_MS = 5000;
const CLOCK_TICK_MS = 15000;
const UI_RETRY_MS = [1000, 2000, 5000, 10000];
const AT_BOTTOM_PX = 40;
const SAFE_LINK = /^(https?:|mailto:|tel:)/i;
// A plain address in a text (the emulator sends no "url" entities), or a /command. Trailing
// punctuation stays outside the link; a /command is only one after a space or at the start.
const TOKENS = /(https?:\/\/[^\s<>"]+[^\s<>".,;:!?)\]}'»])|((?:^|(?<=[\s\u200e\u200f(«"]))\/[A-Za-z][A-Za-z0-9_]*(?:@[A-Za-z0-9_]+)?)/g;

function t(key, params = {}) {
  const text = state.strings["playground." + key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

function chatSlug(key) {
  return key.replace("-", "_");
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "className") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(answer.error || response.statusText);
    error.code = answer.code || "generic";
    error.answer = answer;
    throw error;
  }
  return answer;
}

function errorText(error) {
  const key = "error." + error.code;
  return state.strings["playground." + key] ? t(key) : t("error.generic");
}

// -- text: addresses become links, /commands keep their slash on the left in Arabic ------------

function decorated(text) {
  // Nodes made with textContent and createElement only: nothing in a text becomes HTML.
  const fragment = document.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(TOKENS)) {
    if (match.index > last) fragment.append(text.slice(last, match.index));
    if (match[1]) {
      fragment.append(el("a", { href: match[1], target: "_blank", rel: "noopener noreferrer" }, match[1]));
    } else {
      fragment.append(el("bdi", { dir: "ltr" }, match[2]));
    }
    last = match.index + match[0].length;
  }
  if (last < text.length) fragment.append(text.slice(last));
  return fragment;
}

function setDecorated(node, text) {
  node.replaceChildren(decorated(text));
}

// Telegram entities (offsets in UTF-16 code units, as JavaScript strings).
const WRAPPERS = {
  bold: "strong",
  italic: "em",
  underline: "u",
  strikethrough: "s",
  code: "code",
  pre: "pre",
};

function linkFor(entity, piece) {
  const href = entity.type === "text_link" ? entity.url : piece;
  return href && SAFE_LINK.test(href) ? href : null;
}

function renderText(text, entities) {
  const container = el("div", { className: "message-text", dir: "auto" });
  const cuts = new Set([0, text.length]);
  for (const entity of entities) {
    cuts.add(Math.max(0, Math.min(text.length, entity.offset)));
    cuts.add(Math.max(0, Math.min(text.length, entity.offset + entity.length)));
  }
  const points = [...cuts].sort((a, b) => a - b);
  for (let i = 0; i + 1 < points.length; i += 1) {
    const start = points[i];
    const end = points[i + 1];
    const piece = text.slice(start, end);
    const covering = entities.filter((entity) => entity.offset <= start && entity.offset + entity.length >= end);
    const linked = covering.some((entity) => entity.type === "text_link" || entity.type === "url");
    let node = linked ? document.createTextNode(piece) : decorated(piece);
    for (const entity of covering) {
      if (entity.type === "text_link" || entity.type === "url") {
        const whole = text.slice(entity.offset, entity.offset + entity.length);
        const href = linkFor(entity, whole);
        if (href) node = el("a", { href, target: "_blank", rel: "noopener noreferrer" }, node);
      } else if (WRAPPERS[entity.type]) {
        node = el(WRAPPERS[entity.type], {}, node);
      }
    }
    container.append(node);
  }
  return container;
}

// -- chats --------------------------------------------------------------------------------------

function section(key) {
  return document.querySelector(`section.chat[data-chat="${key}"]`);
}

function listOf(key) {
  const node = section(key);
  return node && node.querySelector(".messages");
}

function atBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight <= AT_BOTTOM_PX;
}

function toBottom(list) {
  list.scrollTop = list.scrollHeight;
  list.pinned = true;
  list.closest("section").querySelector(".new-messages").hidden = true;
}

function jumpTarget(chat) {
  const node = section(chat.key);
  return chat.writable ? node.querySelector("form.composer input") : node.querySelector(".messages");
}

function buildChats() {
  const main = document.getElementById("chats");
  main.replaceChildren();
  const jumps = document.getElementById("chat-jumps");
  jumps.replaceChildren();
  for (const chat of state.chats) {
    state.messages[chat.key] = new Map();
    // Busy until the first snapshot: a screen reader does not read out the whole history.
    const list = el("ol", { className: "messages", "aria-live": "polite", "aria-busy": "true", tabindex: "-1" });
    list.pinned = true;
    list.addEventListener("scroll", () => {
      list.pinned = atBottom(list);
      if (list.pinned) list.closest("section").querySelector(".new-messages").hidden = true;
    });
    const newer = el("button", { type: "button", className: "new-messages", hidden: true });
    newer.addEventListener("click", () => {
      toBottom(list);
      list.focus();
    });
    const parts = [
      el("h2", { id: `title-${chat.key}` }),
      el("p", { className: "chat-hint" }),
    ];
    if (chat.writable) {
      // Past this chat's messages and buttons in one Tab and Enter.
      const skip = el("a", { className: "skip-link", href: `#text-${chat.key}` });
      skip.addEventListener("click", (event) => {
        event.preventDefault();
        jumpTarget(chat).focus();
      });
      parts.push(skip);
    }
    parts.push(list, newer, el("div", { className: "toast", role: "status", dir: "auto" }));
    if (chat.writable) {
      const inputId = `text-${chat.key}`;
      const form = el(
        "form",
        { className: "composer" },
        el("label", { for: inputId }),
        el("input", { id: inputId, name: "text", type: "text", autocomplete: "off", maxlength: "4096", dir: "auto" }),
        el("button", { type: "submit" }),
      );
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        send(chat.key, form);
      });
      parts.push(form);
    }
    parts.push(el("p", { className: "composer-error", role: "alert" }));
    main.append(el("section", { className: "chat", "data-chat": chat.key, "aria-labelledby": `title-${chat.key}` }, ...parts));

    const jump = el("a", { href: chat.writable ? `#text-${chat.key}` : `#title-${chat.key}`, "data-jump": chat.key });
    jump.addEventListener("click", (event) => {
      event.preventDefault();
      const target = jumpTarget(chat);
      target.focus();
      target.scrollIntoView({ block: "nearest" });
    });
    jumps.append(el("li", {}, jump));
  }
}

function labelChats() {
  document.getElementById("jump-title").textContent = t("jump.nav");
  for (const chat of state.chats) {
    const node = section(chat.key);
    const title = t(`chat.${chatSlug(chat.key)}`);
    node.setAttribute("aria-label", title);
    node.querySelector("h2").textContent = title;
    document.querySelector(`a[data-jump="${chat.key}"]`).textContent = title;
    setDecorated(node.querySelector(".chat-hint"), t(`hint.${chatSlug(chat.key)}`));
    node.querySelector(".messages").dataset.empty = t("message.empty");
    node.querySelector(".new-messages").textContent = t("message.new_below");
    const skip = node.querySelector(".skip-link");
    if (skip) skip.textContent = t("jump.composer");
    const form = node.querySelector(".composer");
    if (form) {
      form.querySelector("label").textContent = t("composer.label", { name: chat.name });
      form.querySelector("input").placeholder = t("composer.placeholder");
      form.querySelector("button").textContent = t("composer.send");
    }
    // Words the page adds inside messages (map fallback, "edited", picture text) follow the
    // language too: redraw every message from what the bot sent.
    for (const message of state.messages[chat.key].values()) showMessage(chat.key, message);
  }
}

function renderMessage(key, message, item) {
  const node = item || el("li", { tabindex: "-1" });
  node.className = `message from-${message.from}` + (message.edited ? " edited" : "");
  node.dataset.messageId = String(message.message_id);
  const parts = [];
  if (message.venue) {
    parts.push(
      el(
        "a",
        { className: "venue", href: message.venue.map, target: "_blank", rel: "noopener noreferrer", dir: "auto" },
        "📍 " + (message.venue.title || t("message.map")),
        el("span", { className: "venue-address" }, message.venue.address || t("message.map")),
      ),
    );
  }
  if (message.photo) {
    // A chart's caption is its title: the best words for someone who cannot see it.
    const alt = message.text ? message.text : t("message.photo_alt");
    parts.push(el("img", { className: "photo", src: message.photo.url, alt, width: message.photo.width, height: message.photo.height }));
  }
  if (message.document) {
    parts.push(el("a", { className: "document", href: message.document.url, download: message.document.name, dir: "auto" }, message.document.name));
  }
  if (message.text) parts.push(renderText(message.text, message.entities || []));
  if (message.buttons && message.buttons.length) {
    const keyboard = el("div", { className: "inline-keyboard" });
    for (const row of message.buttons) {
      const line = el("div", { className: "inline-row" });
      for (const button of row) {
        if (button.url) {
          if (SAFE_LINK.test(button.url)) {
            line.append(el("a", { className: "inline-button", href: button.url, target: "_blank", rel: "noopener noreferrer", dir: "auto" }, button.text));
          }
          continue;
        }
        const press = el("button", { type: "button", className: "inline-button", dir: "auto" }, button.text);
        press.addEventListener("click", () => pressButton(key, message.message_id, button.data, press));
        line.append(press);
      }
      keyboard.append(line);
    }
    parts.push(keyboard);
  }
  if (message.edited) parts.push(el("span", { className: "edited-mark" }, t("message.edited")));
  node.replaceChildren(...parts);
  return node;
}

function focusedIn(item) {
  // Where the keyboard focus was in a message about to be redrawn: its button's position,
  // or the message itself; null when the focus is elsewhere.
  const active = document.activeElement;
  if (!item.contains(active)) return null;
  return [...item.querySelectorAll(".inline-button")].indexOf(active);
}

function refocus(item, index) {
  const buttons = item.querySelectorAll(".inline-button");
  const target = index < 0 ? item : buttons[index] || buttons[0] || item;
  target.focus();
}

function showMessage(key, message) {
  const list = listOf(key);
  if (!list) return;
  const follow = list.pinned !== false;
  state.messages[key].set(message.message_id, message);
  const existing = list.querySelector(`li[data-message-id="${message.message_id}"]`);
  if (existing) {
    const focus = focusedIn(existing);
    renderMessage(key, message, existing);
    if (focus !== null) refocus(existing, focus);
  } else {
    const item = renderMessage(key, message);
    list.append(item);
    const photo = item.querySelector("img.photo");
    if (photo) photo.addEventListener("load", () => { if (list.pinned) toBottom(list); });
    if (!follow && message.from === "bot") list.closest("section").querySelector(".new-messages").hidden = false;
  }
  // An edit can make a message taller, a new one lengthens the list: the chat keeps showing
  // its end when the person was reading its end (or just wrote).
  if (follow || (!existing && message.from === "user")) toBottom(list);
  trimHistory(key);
}

function trimHistory(key) {
  // The server keeps a chat's last messages only (and so does the emulator): so does the page.
  const kept = state.messages[key];
  for (const oldest of kept.keys()) {
    if (kept.size <= state.historyLimit) break;
    removeMessage(key, oldest);
  }
}

function removeMessage(key, messageId) {
  const list = listOf(key);
  if (!list) return;
  state.messages[key].delete(messageId);
  const item = list.querySelector(`li[data-message-id="${messageId}"]`);
  if (item) item.remove();
}

function showToast(key, text, alert) {
  const node = section(key);
  if (!node) return;
  const toast = node.querySelector(".toast");
  toast.textContent = text;
  toast.classList.toggle("alert", Boolean(alert));
  clearTimeout(toast.hideTimer);
  toast.hideTimer = setTimeout(() => {
    toast.textContent = "";
  }, TOAST_MS);
}

function showChatError(key, text) {
  const node = section(key);
  if (node) node.querySelector(".composer-error").textContent = text;
}

async function send(key, form) {
  const input = form.querySelector("input");
  const text = input.value;
  if (!text.trim()) {
    // Enter pressed again while a message is on its way: nothing more to send, no error.
    if (!form.sending) showChatError(key, t("error.empty_text"));
    return;
  }
  showChatError(key, "");
  input.value = ""; // at once, as a chat app does: one Enter, one message
  // Sent one after the other, in the order typed, each once.
  const previous = form.sending || Promise.resolve();
  const mine = previous.then(() => api("POST", `/api/chats/${key}/messages`, { text })).catch((error) => {
    if (!input.value) input.value = text; // not sent: given back to be tried again
    showChatError(key, errorText(error));
  });
  form.sending = mine;
  form.setAttribute("aria-busy", "true");
  await mine;
  if (form.sending === mine) {
    form.sending = null;
    form.removeAttribute("aria-busy");
  }
}

async function pressButton(key, messageId, data, button) {
  const pending = `${key}:${messageId}`;
  if (state.pressing.has(pending)) return; // one press per message until the bot answered
  state.pressing.add(pending);
  showChatError(key, "");
  button.setAttribute("aria-busy", "true");
  try {
    await api("POST", `/api/chats/${key}/callbacks`, { message_id: messageId, data });
  } catch (error) {
    showChatError(key, errorText(error));
  } finally {
    state.pressing.delete(pending);
    button.removeAttribute("aria-busy");
  }
}

// -- time travel ----------------------------------------------------------------------------------

function botNow() {
  if (!state.clock) return null;
  return new Date(Date.now() + state.clock.offset_ms);
}

function showClock() {
  const output = document.querySelector("output.clock");
  const now = botNow();
  if (!now) return;
  const format = new Intl.DateTimeFormat(state.language, {
    timeZone: "Europe/Paris",
    weekday: "long",
    day: "numeric",
    month: "long",
    year: "numeric",
    hour: "2-digit",
    minute: "2-digit",
  });
  const text = format.format(now);
  // A live region: written only when the minute shown changes, or it is read out for nothing.
  if (output.textContent !== text) output.textContent = text;
  output.dataset.iso = now.toISOString();
}

function setClock(clock) {
  state.clock = clock;
  showClock();
  const about = document.getElementById("travel-about");
  const workshop = clock.workshop;
  about.textContent = workshop
    ? t("travel.about", { title: workshop.title[state.language] || workshop.title.fr || Object.values(workshop.title)[0] })
    : "";
  showTravelButtons();
}

function showTravelButtons() {
  for (const kind of TRAVELS) {
    const button = document.querySelector(`button[data-travel="${kind}"]`);
    const target = TARGETS.includes(kind) && state.clock ? state.clock.targets[kind] : null;
    button.disabled = state.travelling || Boolean(target && !target.at);
    if (target) {
      const reason = document.getElementById(`reason-${kind}`);
      reason.textContent = target.at ? "" : t(target.reason.replace(/^playground\./, ""), target.params);
    }
  }
}

async function travel(kind, button) {
  if (state.travelling) return;
  const error = document.getElementById("travel-error");
  error.textContent = "";
  // Every travel button waits for this journey: a second press would travel twice.
  state.travelling = true;
  showTravelButtons();
  try {
    setClock(await api("POST", "/api/travel", { to: kind }));
  } catch (failure) {
    error.textContent = failure.answer && failure.answer.reason
      ? t(failure.answer.reason.replace(/^playground\./, ""), failure.answer.params)
      : errorText(failure);
  } finally {
    state.travelling = false;
    showTravelButtons();
    if (!button.disabled) button.focus();
    else document.querySelector(".time-travel").focus();
  }
}

function labelTravel() {
  document.getElementById("travel-title").textContent = t("travel.title");
  document.getElementById("clock-label").textContent = t("travel.clock_label");
  document.getElementById("travel-hint").textContent = t("travel.hint");
  for (const kind of TRAVELS) {
    document.querySelector(`button[data-travel="${kind}"]`).textContent = t(`travel.${kind.replace("-", "_")}`);
  }
  if (state.clock) setClock(state.clock);
}

// -- language -------------------------------------------------------------------------------------

function applyLanguage(ui) {
  state.language = ui.language;
  state.strings = ui.strings;
  if (!state.chats.length) {
    state.chats = ui.chats;
    buildChats();
  }
  document.documentElement.lang = ui.language;
  document.documentElement.dir = ui.dir;
  document.title = t("title");
  document.getElementById("page-title").textContent = t("title");
  document.getElementById("page-intro").textContent = t("intro");
  document.getElementById("language-label").textContent = t("language_label");
  document.getElementById("ui-language").value = ui.language;
  labelChats();
  labelTravel();
  setConnection(state.connection);
}

async function loadLanguage(language, attempt = 0) {
  try {
    applyLanguage(await api("GET", `/api/ui/${language}`));
  } catch (error) {
    // Said in the language shown until now, and tried again while that language is wanted.
    document.getElementById("connection").textContent = t("error.ui_unavailable");
    const wait = UI_RETRY_MS[Math.min(attempt, UI_RETRY_MS.length - 1)];
    setTimeout(() => {
      if (document.getElementById("ui-language").value === language) loadLanguage(language, attempt + 1);
    }, wait);
  }
}

function setConnection(status) {
  state.connection = status;
  document.getElementById("connection").textContent = t(`status.${status}`);
}

// -- the event stream -----------------------------------------------------------------------------

function applySnapshot(event) {
  state.historyLimit = event.history_limit;
  for (const chat of state.chats) {
    const list = listOf(chat.key);
    list.setAttribute("aria-busy", "true"); // a reconnection redraws; nothing to read out
    list.replaceChildren();
    state.messages[chat.key].clear();
    list.pinned = true;
    for (const message of event.chats[chat.key] || []) showMessage(chat.key, message);
    list.removeAttribute("aria-busy");
  }
  setClock(event.clock);
  state.ready = true;
  setConnection(event.alive === false ? "feed_down" : "connected");
  document.body.dataset.ready = "true";
}

function follow() {
  const stream = new EventSource("/api/events");
  stream.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "snapshot") applySnapshot(event);
    else if (event.type === "message" || event.type === "edit") showMessage(event.chat, event.message);
    else if (event.type === "delete") removeMessage(event.chat, event.message_id);
    else if (event.type === "toast") showToast(event.chat, event.text, event.alert);
    else if (event.type === "clock") setClock(event.clock);
    else if (event.type === "feed") setConnection(event.alive ? "connected" : "feed_down");
  };
  stream.onerror = () => setConnection("disconnected"); // EventSource reconnects by itself
}

function start() {
  applyLanguage(JSON.parse(document.getElementById("ui-initial").textContent));
  document.getElementById("ui-language").addEventListener("change", (event) => {
    loadLanguage(event.target.value);
  });
  for (const kind of TRAVELS) {
    const button = document.querySelector(`button[data-travel="${kind}"]`);
    button.addEventListener("click", () => travel(kind, button));
  }
  setInterval(showClock, CLOCK_TICK_MS);
  follow();
}

start();
