// What the page keeps in the browser: conversations and settings in localStorage (this browser,
// this server's origin), the API key in sessionStorage (this tab) unless the user asks to keep
// it, then in localStorage. Nothing of it leaves the browser except in requests to this server.

const CHATS = "mlxk.chats.v1";
const SETTINGS = "mlxk.settings.v1";
const KEY = "mlxk.apiKey";

export const DEFAULT_SETTINGS = Object.freeze({
  model: "",
  system: "",
  temperature: 0.7,
  maxTokens: 1024,
  theme: "auto", // auto (the system's), light or dark
});

function read(storage, name, fallback) {
  try {
    const raw = storage.getItem(name);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback; // storage off, or damaged: start afresh rather than fail to load
  }
}

/** Writes `value`; false when the browser refuses (storage full or disabled). */
function write(storage, name, value) {
  try {
    storage.setItem(name, JSON.stringify(value));
    return true;
  } catch {
    return false;
  }
}

export function loadSettings() {
  const stored = read(localStorage, SETTINGS, {});
  const settings = { ...DEFAULT_SETTINGS };
  for (const name of Object.keys(DEFAULT_SETTINGS)) {
    if (typeof stored[name] === typeof DEFAULT_SETTINGS[name]) settings[name] = stored[name];
  }
  return settings;
}

export function saveSettings(settings) {
  return write(localStorage, SETTINGS, settings);
}

export function loadChats() {
  const stored = read(localStorage, CHATS, null);
  if (!stored || !Array.isArray(stored.chats)) return { chats: [], current: null };
  const chats = stored.chats.filter(
    (chat) => chat && typeof chat.id === "string" && Array.isArray(chat.messages),
  );
  return { chats, current: typeof stored.current === "string" ? stored.current : null };
}

export function saveChats(state) {
  return write(localStorage, CHATS, { chats: state.chats, current: state.current });
}

export function newChat() {
  const id = crypto.getRandomValues(new Uint32Array(2)).join("-");
  return { id, title: "", created: Date.now(), updated: Date.now(), messages: [] };
}

export function loadKey() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "";
}

export function keyIsKept() {
  return localStorage.getItem(KEY) !== null;
}

/** Stores the key for this tab, or (with `keep`) for this browser; an empty key forgets it. */
export function saveKey(key, keep) {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
  if (key) (keep ? localStorage : sessionStorage).setItem(KEY, key);
}
