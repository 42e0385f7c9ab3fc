// The chat page: conversations in the sidebar, the current one in the middle, a composer below.
// Model text reaches the DOM only as text nodes (markdown.js builds the elements); user text is
// shown as it was typed.

import { ApiError, chatModels, streamChat } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import * as store from "./store.js";

const $ = (id) => document.getElementById(id);
const ui = {
  sidebar: $("sidebar"), scrim: $("scrim"), menu: $("menu"), chatList: $("chat-list"),
  newChat: $("new-chat"), model: $("model"), status: $("status"), messages: $("messages"),
  composer: $("composer"), prompt: $("prompt"), send: $("send"), stop: $("stop"), theme: $("theme"),
  settings: $("settings"), settingsForm: $("settings-form"), system: $("system"),
  temperature: $("temperature"), temperatureValue: $("temperature-value"), maxTokens: $("max-tokens"),
  themeChoice: $("theme-choice"), keyState: $("key-state"), changeKey: $("change-key"),
  forgetKey: $("forget-key"), clearChats: $("clear-chats"), keyDialog: $("key-dialog"),
  keyForm: $("key-form"), keyInput: $("key-input"), keyKeep: $("key-keep"), keyError: $("key-error"),
  keyCancel: $("key-cancel"),
};

const settings = store.loadSettings();
const state = store.loadChats();
let models = [];
let key = store.loadKey();
let running = null; // {controller, chat, message, view} while an answer streams

// --- helpers ---------------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function icon(name) {
  return $(`${name}-icon`).content.firstElementChild.cloneNode(true);
}

function setStatus(text, kind = "") {
  ui.status.textContent = text;
  ui.status.dataset.kind = kind;
}

function persist() {
  if (!store.saveChats(state)) setStatus("The browser's storage is full: history is not saved", "error");
}

async function copyText(text, button) {
  let done = false;
  try {
    await navigator.clipboard.writeText(text);
    done = true;
  } catch {
    // no clipboard API (a page over plain HTTP from another machine): the older way
    const area = el("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.append(area);
    area.select();
    done = document.execCommand("copy");
    area.remove();
  }
  const label = button.querySelector(".label") || button;
  const before = label.textContent;
  label.textContent = done ? "Copied" : "Copy failed";
  button.classList.toggle("copied", done);
  setTimeout(() => {
    label.textContent = before;
    button.classList.remove("copied");
  }, 1500);
}

function copyButton(getText, title) {
  const button = el("button", "copy");
  button.type = "button";
  button.setAttribute("aria-label", title);
  button.title = title;
  button.append(icon("copy"), el("span", "label", "Copy"));
  button.addEventListener("click", () => copyText(getText(), button));
  return button;
}

/** A leading <think>…</think> of the content (a model whose reasoning the server does not split
 * off) is reasoning too. */
function splitThinking(content) {
  const m = content.match(/^\s*<think>([\s\S]*?)(<\/think>|$)/);
  if (!m) return { thinking: "", answer: content, open: false };
  return { thinking: m[1].trim(), answer: content.slice(m[0].length).replace(/^\s+/, ""), open: !m[2] };
}

function currentChat() {
  return state.chats.find((chat) => chat.id === state.current) || null;
}

// --- theme -----------------------------------------------------------------------------------

const darkQuery = matchMedia("(prefers-color-scheme: dark)");

function applyTheme() {
  const dark = settings.theme === "dark" || (settings.theme === "auto" && darkQuery.matches);
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  ui.themeChoice.value = settings.theme;
}

darkQuery.addEventListener("change", applyTheme);
ui.theme.addEventListener("click", () => {
  settings.theme = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  store.saveSettings(settings);
  applyTheme();
});

// --- sidebar ---------------------------------------------------------------------------------

function openSidebar(open) {
  document.body.classList.toggle("sidebar-open", open);
  ui.scrim.hidden = !open;
  ui.menu.setAttribute("aria-expanded", String(open));
}

ui.menu.addEventListener("click", () => openSidebar(!document.body.classList.contains("sidebar-open")));
ui.scrim.addEventListener("click", () => openSidebar(false));

function renderChatList() {
  ui.chatList.replaceChildren();
  const chats = [...state.chats].sort((a, b) => b.updated - a.updated);
  if (!chats.length) ui.chatList.append(el("p", "muted empty-list", "No conversations yet"));
  for (const chat of chats) {
    const item = el("div", "chat-item");
    item.classList.toggle("current", chat.id === state.current);
    const open = el("button", "chat-open", chat.title || "New chat");
    open.type = "button";
    open.title = chat.title || "New chat";
    open.addEventListener("click", () => {
      selectChat(chat.id);
      openSidebar(false);
    });
    const remove = el("button", "chat-delete");
    remove.type = "button";
    remove.setAttribute("aria-label", `Delete “${chat.title || "New chat"}”`);
    remove.append(icon("delete"));
    remove.addEventListener("click", () => deleteChat(chat.id));
    item.append(open, remove);
    ui.chatList.append(item);
  }
}

function selectChat(id) {
  state.current = id;
  persist();
  renderChatList();
  renderMessages();
}

function deleteChat(id) {
  if (running && running.chat.id === id) running.controller.abort();
  state.chats = state.chats.filter((chat) => chat.id !== id);
  if (state.current === id) state.current = state.chats.length ? state.chats[0].id : null;
  persist();
  renderChatList();
  renderMessages();
}

function startChat() {
  const empty = state.chats.find((chat) => !chat.messages.length);
  const chat = empty || store.newChat();
  if (!empty) state.chats.push(chat);
  selectChat(chat.id);
  openSidebar(false);
  ui.prompt.focus();
}

ui.newChat.addEventListener("click", startChat);

// --- messages --------------------------------------------------------------------------------

function userView(message) {
  const article = el("article", "message user");
  article.dataset.role = "user";
  const bubble = el("div", "bubble");
  bubble.append(el("div", "user-text", message.content));
  const meta = el("footer", "meta");
  meta.append(copyButton(() => message.content, "Copy message"));
  article.append(bubble, meta);
  return article;
}

function assistantView(message) {
  const article = el("article", "message assistant");
  article.dataset.role = "assistant";
  const reasoning = el("details", "reasoning");
  const summary = el("summary", null, "Reasoning");
  const reasoningText = el("div", "reasoning-text");
  reasoning.append(summary, reasoningText);
  const content = el("div", "content markdown");
  const error = el("p", "error-text");
  const meta = el("footer", "meta");
  const model = el("span", "model-name");
  const stats = el("span", "stats");
  meta.append(model, stats, copyButton(() => splitThinking(message.content).answer, "Copy answer"));
  article.append(reasoning, content, error, meta);
  const view = { article, reasoning, summary, reasoningText, content, error, model, stats };
  updateAssistant(view, message);
  return view;
}

function updateAssistant(view, message) {
  const { thinking, answer, open } = splitThinking(message.content || "");
  const reasoning = ((message.reasoning || "") + thinking).trim();
  view.article.dataset.state = message.state || "done";
  view.article.dataset.model = message.model || "";
  view.reasoning.hidden = !reasoning;
  view.summary.textContent =
    message.state === "streaming" && (open || (!answer && message.reasoning)) ? "Reasoning…" : "Reasoning";
  if (view.reasoningText.textContent !== reasoning) view.reasoningText.textContent = reasoning;
  view.content.replaceChildren(renderMarkdown(answer, (code) => copyButton(() => code, "Copy code")));
  if (message.state === "streaming") {
    const last = view.content.lastElementChild;
    (last && /^(P|LI|H\d)$/.test(last.tagName) ? last : view.content).append(el("span", "cursor"));
  }
  view.error.textContent = message.error || "";
  view.error.hidden = !message.error;
  view.model.textContent = message.model || "";
  view.stats.textContent = statsText(message);
}

function statsText(message) {
  const parts = [];
  if (message.state === "stopped") parts.push("stopped");
  if (message.finish === "length") parts.push("cut at max tokens");
  const usage = message.usage;
  if (usage && usage.completion_tokens) {
    parts.push(`${usage.completion_tokens} tokens`);
    if (message.seconds > 0) parts.push(`${(usage.completion_tokens / message.seconds).toFixed(1)} tok/s`);
  }
  return parts.join(" · ");
}

function emptyView() {
  const box = el("div", "empty");
  box.append(el("h1", null, "What can I help with?"));
  box.append(
    el(
      "p",
      "muted",
      models.length
        ? "Answers come from a model in your Hugging Face cache, on this machine."
        : "No chat model is in the cache yet: mlxk pull one, then reload this page.",
    ),
  );
  return box;
}

function renderMessages() {
  const chat = currentChat();
  ui.messages.replaceChildren();
  if (!chat || !chat.messages.length) {
    ui.messages.append(emptyView());
    return;
  }
  for (const message of chat.messages) {
    if (message.role === "user") ui.messages.append(userView(message));
    else {
      const view = assistantView(message);
      if (running && running.message === message) running.view = view;
      ui.messages.append(view.article);
    }
  }
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function nearBottom() {
  const box = ui.messages;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

// --- sending ---------------------------------------------------------------------------------

function requestMessages(chat, upTo) {
  const messages = [];
  if (settings.system.trim()) messages.push({ role: "system", content: settings.system });
  for (const message of chat.messages.slice(0, upTo)) {
    if (message.role === "user") messages.push({ role: "user", content: message.content });
    else {
      const answer = splitThinking(message.content || "").answer;
      if (answer && !message.error) messages.push({ role: "assistant", content: answer });
    }
  }
  return messages;
}

function setRunning(on) {
  ui.send.hidden = on;
  ui.stop.hidden = !on;
  ui.messages.setAttribute("aria-busy", String(on));
  updateSendButton();
}

function updateSendButton() {
  ui.send.disabled = !!running || !ui.prompt.value.trim() || !ui.model.value;
}

async function send(text) {
  let chat = currentChat();
  if (!chat) {
    chat = store.newChat();
    state.chats.push(chat);
    state.current = chat.id;
  }
  const model = ui.model.value;
  chat.messages.push({ role: "user", content: text });
  if (!chat.title) chat.title = text.replace(/\s+/g, " ").trim().slice(0, 60);
  const message = { role: "assistant", content: "", reasoning: "", model, state: "streaming" };
  chat.messages.push(message);
  chat.updated = Date.now();
  chat.model = model;
  persist();
  const controller = new AbortController();
  running = { controller, chat, message, view: null };
  renderChatList();
  renderMessages(); // binds the view of the new message to `running`
  setRunning(true);
  const started = performance.now();
  let frame = 0;
  const redraw = () => {
    frame = 0;
    if (!running || !running.view || currentChat() !== chat) return;
    const follow = nearBottom();
    updateAssistant(running.view, message);
    if (follow) ui.messages.scrollTop = ui.messages.scrollHeight;
  };
  try {
    const request = {
      model,
      messages: requestMessages(chat, chat.messages.length - 1),
      temperature: settings.temperature,
      max_tokens: settings.maxTokens,
    };
    const result = await streamChat(request, {
      key,
      signal: controller.signal,
      onDelta: ({ content, reasoning }) => {
        message.content += content;
        message.reasoning += reasoning;
        if (!frame) frame = requestAnimationFrame(redraw);
      },
    });
    message.state = "done";
    message.finish = result.finishReason;
    message.usage = result.usage;
  } catch (error) {
    if (error.name === "AbortError") message.state = "stopped";
    else {
      message.state = "error";
      message.error = error instanceof ApiError ? error.message : `The request failed: ${error.message}`;
      if (error instanceof ApiError && error.status === 401) askForKey("The server refused the key.");
    }
  } finally {
    if (frame) cancelAnimationFrame(frame);
    message.seconds = (performance.now() - started) / 1000;
    running = null;
    chat.updated = Date.now();
    persist();
    setRunning(false);
    renderMessages();
  }
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.prompt.value.trim();
  if (!text || running || !ui.model.value) return;
  ui.prompt.value = "";
  fitPrompt();
  send(text);
});

ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

function fitPrompt() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, 240)}px`;
  updateSendButton();
}

ui.prompt.addEventListener("input", fitPrompt);
ui.stop.addEventListener("click", () => running?.controller.abort());
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && running && !ui.settings.open && !ui.keyDialog.open) running.controller.abort();
});

// --- models and the key ----------------------------------------------------------------------

async function loadModels() {
  setStatus("");
  try {
    models = await chatModels(key);
  } catch (error) {
    models = [];
    fillModels();
    if (error instanceof ApiError && error.status === 401) askForKey(key ? "The server refused the key." : "");
    else setStatus(`Could not list the models: ${error.message}`, "error");
    return false;
  }
  fillModels();
  renderMessages();
  return true;
}

function fillModels() {
  ui.model.replaceChildren();
  for (const model of models) {
    const option = el("option", null, model.id);
    option.value = model.id;
    ui.model.append(option);
  }
  if (!models.length) ui.model.append(el("option", null, "No chat models"));
  ui.model.disabled = !models.length;
  const wanted = currentChat()?.model || settings.model;
  if (models.some((model) => model.id === wanted)) ui.model.value = wanted;
  else if (models.some((model) => model.id === settings.model)) ui.model.value = settings.model;
  updateSendButton();
}

ui.model.addEventListener("change", () => {
  settings.model = ui.model.value;
  store.saveSettings(settings);
  const chat = currentChat();
  if (chat) chat.model = ui.model.value;
  updateSendButton();
});

function askForKey(problem) {
  ui.keyError.textContent = problem || "";
  ui.keyInput.value = "";
  ui.keyKeep.checked = store.keyIsKept();
  if (ui.settings.open) ui.settings.close();
  if (!ui.keyDialog.open) ui.keyDialog.showModal();
  ui.keyInput.focus();
}

ui.keyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  key = ui.keyInput.value.trim();
  store.saveKey(key, ui.keyKeep.checked);
  ui.keyDialog.close();
  await loadModels();
  renderKeyState();
});
ui.keyCancel.addEventListener("click", () => ui.keyDialog.close());

function renderKeyState() {
  ui.keyState.textContent = key
    ? store.keyIsKept()
      ? "A key is kept on this device."
      : "A key is kept for this tab only."
    : "No key given (a server started with --api-key asks for one).";
  ui.forgetKey.disabled = !key;
}

ui.changeKey.addEventListener("click", () => askForKey(""));
ui.forgetKey.addEventListener("click", () => {
  key = "";
  store.saveKey("", false);
  renderKeyState();
});

// --- settings --------------------------------------------------------------------------------

function showSettings() {
  ui.system.value = settings.system;
  ui.temperature.value = String(settings.temperature);
  ui.temperatureValue.textContent = settings.temperature.toFixed(2);
  ui.maxTokens.value = String(settings.maxTokens);
  renderKeyState();
  openSidebar(false);
  ui.settings.showModal();
}

$("open-settings").addEventListener("click", showSettings);
$("settings-button").addEventListener("click", showSettings);
ui.settingsForm.addEventListener("submit", (event) => {
  event.preventDefault();
  ui.settings.close();
});
ui.system.addEventListener("input", () => {
  settings.system = ui.system.value;
  store.saveSettings(settings);
});
ui.temperature.addEventListener("input", () => {
  settings.temperature = Number(ui.temperature.value);
  ui.temperatureValue.textContent = settings.temperature.toFixed(2);
  store.saveSettings(settings);
});
ui.maxTokens.addEventListener("input", () => {
  const value = Number(ui.maxTokens.value);
  if (Number.isInteger(value) && value >= 1 && value <= 1_000_000) {
    settings.maxTokens = value;
    store.saveSettings(settings);
  }
});
ui.themeChoice.addEventListener("change", () => {
  settings.theme = ui.themeChoice.value;
  store.saveSettings(settings);
  applyTheme();
});
ui.clearChats.addEventListener("click", () => {
  if (!confirm("Delete every conversation kept in this browser?")) return;
  running?.controller.abort();
  state.chats = [];
  state.current = null;
  persist();
  renderChatList();
  renderMessages();
});

// --- start -----------------------------------------------------------------------------------

applyTheme();
renderChatList();
renderMessages();
fitPrompt();
loadModels();
