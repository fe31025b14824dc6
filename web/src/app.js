// The fleet page: boxes table, positions plot, per-measure charts with threshold lines,
// warnings list. Talks only to the API on its own origin (relative URLs, so it works under
// an API Gateway stage prefix such as /v1/). Every text from the API goes into the DOM as
// textContent, never as HTML.
import uPlot from "uplot";

const TEXT = {
  en: {
    title: "Sensor fleet", range: "Range", r1h: "1 hour", r24h: "24 hours", r7d: "7 days", r30d: "30 days",
    auto: "Auto refresh", key: "Viewer key", keyPrompt: "Viewer key (x-api-key)", save: "Save",
    fleet: "Boxes", group: "Group", lastSeen: "Last seen", latest: "Latest values", warnings: "Warnings",
    noBoxes: "No box has reported in this range.", positions: "Positions", readings: "Readings",
    warningList: "Warnings", noWarnings: "No warnings in this range.", more: "More",
    clockSkewed: "clock off", clockSkewedTitle: "The box's clock differs from the time its readings arrived (seconds):",
    none: "none", noPosition: "No box has a position.", updated: "Updated", loadFailed: "Could not load",
    needKey: "This API needs a viewer key: enter it above.", high: "high", low: "low",
    min: "min", avg: "avg", max: "max", selectGroup: "Select a box in the table.", noData: "no readings",
  },
  ko: {
    title: "센서 박스 현황", range: "기간", r1h: "1시간", r24h: "24시간", r7d: "7일", r30d: "30일",
    auto: "자동 새로고침", key: "조회 키", keyPrompt: "조회 키 (x-api-key)", save: "저장",
    fleet: "박스 목록", group: "그룹", lastSeen: "마지막 수신", latest: "최근 값", warnings: "경고",
    noBoxes: "이 기간에 보고한 박스가 없습니다.", positions: "위치", readings: "측정값 추이",
    warningList: "경고 목록", noWarnings: "이 기간에 경고가 없습니다.", more: "더 보기",
    clockSkewed: "시계 오차", clockSkewedTitle: "박스 시계와 수신 시각의 차이(초):",
    none: "없음", noPosition: "위치가 있는 박스가 없습니다.", updated: "갱신", loadFailed: "불러오지 못했습니다",
    needKey: "조회 키가 필요합니다. 위에 입력하세요.", high: "상한", low: "하한",
    min: "최소", avg: "평균", max: "최대", selectGroup: "표에서 박스를 선택하세요.", noData: "측정값 없음",
  },
};

const RANGES = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
const params = new URLSearchParams(location.search);
const REFRESH_MS = Math.max(2, Number(params.get("refresh")) || 30) * 1000;

const state = {
  lang: localStorage.getItem("lang") || ((navigator.language || "").toLowerCase().startsWith("ko") ? "ko" : "en"),
  key: localStorage.getItem("viewerKey") || "",
  boxes: [],
  rules: [],
  selected: params.get("groupid") || null,
  range: "24h",
  next: null,
  errors: new Map(),
  charts: [],
  timer: null,
  rendered: false,
};
if (!TEXT[state.lang]) state.lang = "en";

const $ = (id) => document.getElementById(id);
const t = (key) => TEXT[state.lang][key] || TEXT.en[key] || key;
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
};
const svg = (tag, attrs = {}) => {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
};
const fmtTime = (iso) => new Date(iso).toLocaleString(state.lang === "ko" ? "ko-KR" : "en-GB");
const fmtValue = (v) => (Number.isInteger(v) ? String(v) : Number(v).toFixed(2).replace(/\.?0+$/, ""));

// The API base: the page's own path as a directory (`/v1/` on AWS, `/` locally).
const base = new URL(location.pathname.endsWith("/") ? location.pathname : location.pathname + "/", location.origin);

class ApiError extends Error {
  constructor(route, status, message, key) {
    super(message);
    this.route = route;
    this.status = status;
    // The key the request was sent with: a 403 for a key already replaced says nothing.
    this.key = key;
  }
}

async function api(route, query = {}) {
  const url = new URL("api/" + route, base);
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) url.searchParams.set(k, v);
  const key = state.key;
  const headers = key ? { "x-api-key": key } : {};
  let response;
  try {
    response = await fetch(url, { headers, cache: "no-store" });
  } catch (e) {
    throw new ApiError(route, 0, String(e.message || e), key);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const message = (body && (body.message || body.error)) || response.statusText || "HTTP " + response.status;
    throw new ApiError(route, response.status, message, key);
  }
  return body;
}

function showErrors() {
  const box = $("error");
  const lines = [...state.errors.values()];
  box.replaceChildren(...lines.map((line) => el("div", {}, line)));
  box.hidden = lines.length === 0;
}

function failed(route, e) {
  let text = `${t("loadFailed")}: ${route} (${e.status ? "HTTP " + e.status : "network"}): ${e.message}`;
  if (e.status === 403) {
    if (e.key !== state.key) return; // sent before the viewer entered a new key
    text += " " + t("needKey");
    $("key-form").hidden = false;
  }
  state.errors.set(route, text);
  showErrors();
}

function succeeded(route) {
  if (state.errors.delete(route)) showErrors();
}

async function load(route, query) {
  try {
    const body = await api(route, query);
    succeeded(route);
    return body;
  } catch (e) {
    failed(route, e instanceof ApiError ? e : new ApiError(route, 0, String(e), state.key));
    return null;
  }
}

function rangeQuery() {
  const to = Date.now();
  return { from: new Date(to - RANGES[state.range]).toISOString(), to: new Date(to).toISOString() };
}

function applyLanguage() {
  document.documentElement.lang = state.lang;
  document.title = t("title");
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const b of document.querySelectorAll("[data-lang]")) b.setAttribute("aria-pressed", String(b.dataset.lang === state.lang));
}

function renderFleet() {
  const body = $("fleet").tBodies[0];
  const rows = state.boxes.map((box) => {
    const latest = el("td", { class: "latest" });
    for (const s of box.sensors) {
      latest.append(el("span", { class: "sensor-name" }, s.sensor));
      for (const [measure, value] of Object.entries(s.latest)) {
        const warn = s.warnings.includes(measure);
        latest.append(el("span", { class: "value" + (warn ? " warn" : ""), "data-sensor": s.sensor, "data-measure": measure }, `${measure} ${fmtValue(value)}`));
      }
    }
    const warnings = el("td", { class: "warnings" });
    if (box.warnings.length) for (const w of box.warnings) warnings.append(el("span", { class: "badge" }, w));
    else warnings.append(el("span", { class: "ok" }, t("none")));
    const lastSeen = el("td", { class: "last-seen" }, fmtTime(box.last_seen));
    if (box.clock_skewed) {
      // Its readings still show (placed at arrival when its clock is ahead); say why
      // their own times look wrong.
      const skews = box.sensors.filter((s) => s.clock_skewed && s.clock_skew_s != null).map((s) => `${s.sensor} ${-s.clock_skew_s}`);
      lastSeen.append(" ", el("span", { class: "badge clock-skewed", title: `${t("clockSkewedTitle")} ${skews.join(", ")}` }, t("clockSkewed")));
    }
    const row = el("tr", { "data-groupid": box.groupid }, el("td", { class: "group" }, box.groupid), lastSeen, latest, warnings);
    if (box.groupid === state.selected) row.classList.add("selected");
    row.addEventListener("click", () => select(box.groupid));
    return row;
  });
  body.replaceChildren(...rows);
  $("fleet-empty").hidden = state.boxes.length > 0;
}

function renderMap() {
  const map = $("map");
  const W = 400, H = 260, P = 24;
  const placed = state.boxes.filter((b) => b.location);
  const nodes = [];
  for (let i = 1; i < 4; i++) {
    nodes.push(svg("line", { class: "grid", x1: (W * i) / 4, y1: 0, x2: (W * i) / 4, y2: H }));
    nodes.push(svg("line", { class: "grid", x1: 0, y1: (H * i) / 4, x2: W, y2: (H * i) / 4 }));
  }
  if (!placed.length) {
    const note = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" });
    note.textContent = t("noPosition");
    nodes.push(note);
  } else {
    // An equirectangular plot of the boxes' own bounding box (plus a margin), so it needs
    // no map tiles and works offline; longitudes scaled by cos(latitude) keep shapes true.
    const lats = placed.map((b) => b.location.lat), lons = placed.map((b) => b.location.lon);
    const midLat = (Math.min(...lats) + Math.max(...lats)) / 2;
    const k = Math.cos((midLat * Math.PI) / 180) || 1;
    const span = Math.max((Math.max(...lons) - Math.min(...lons)) * k, Math.max(...lats) - Math.min(...lats), 0.01);
    const cx = (Math.min(...lons) + Math.max(...lons)) / 2, cy = midLat;
    const scale = Math.min(W - 2 * P, H - 2 * P) / span;
    for (const b of placed) {
      const x = W / 2 + (b.location.lon - cx) * k * scale, y = H / 2 - (b.location.lat - cy) * scale;
      const marker = svg("circle", { class: "marker" + (b.warnings.length ? " warn" : ""), cx: x.toFixed(1), cy: y.toFixed(1), r: 6, "data-groupid": b.groupid });
      const title = svg("title");
      title.textContent = `${b.groupid} (${b.location.lat.toFixed(5)}, ${b.location.lon.toFixed(5)})`;
      marker.append(title);
      marker.addEventListener("click", () => select(b.groupid));
      const label = svg("text", { x: (x + 9).toFixed(1), y: (y + 4).toFixed(1) });
      label.textContent = b.groupid;
      nodes.push(marker, label);
    }
  }
  map.replaceChildren(...nodes);
}

function rule(sensor, measure) {
  return state.rules.find((r) => r.sensor === sensor && r.measure === measure) || {};
}

async function renderCharts() {
  for (const c of state.charts) c.destroy();
  state.charts = [];
  const box = state.boxes.find((b) => b.groupid === state.selected);
  $("charts-group").textContent = box ? box.groupid : "";
  const holder = $("charts");
  if (!box) {
    holder.replaceChildren(el("p", { class: "muted" }, t("selectGroup")));
    return;
  }
  const range = rangeQuery();
  const wanted = box.sensors.flatMap((s) => Object.keys(s.latest).map((measure) => ({ sensor: s.sensor, measure })));
  const series = await Promise.all(
    wanted.map((w) => load("readings", { sensor: w.sensor, groupid: box.groupid, measure: w.measure, ...range }).then((r) => ({ ...w, r }))),
  );
  const width = Math.max(320, Math.min(holder.clientWidth || 900, 900) / (wanted.length > 1 ? 2 : 1) - 16);
  const blocks = [];
  for (const { sensor, measure, r } of series) {
    if (!r) continue;
    const block = el("div", { class: "chart", "data-sensor": sensor, "data-measure": measure, "data-points": r.buckets.length, "data-count": r.count });
    block.append(el("h3", {}, `${sensor} · ${measure} (${r.interval})${r.buckets.length ? "" : " — " + t("noData")}`));
    blocks.push(block);
    const xs = r.buckets.map((b) => b.t / 1000);
    const data = [xs, r.buckets.map((b) => b.min), r.buckets.map((b) => b.avg), r.buckets.map((b) => b.max)];
    const seriesOpts = [
      {},
      { label: t("min"), stroke: "#90caf9", width: 1 },
      { label: t("avg"), stroke: "#1565c0", width: 2 },
      { label: t("max"), stroke: "#ef9a9a", width: 1 },
    ];
    const { high, low } = rule(sensor, measure);
    for (const [level, name] of [[high, "high"], [low, "low"]]) {
      if (typeof level !== "number") continue;
      data.push(xs.map(() => level));
      seriesOpts.push({ label: `${t(name)} ${fmtValue(level)}`, stroke: "#c62828", dash: [6, 4], width: 1, points: { show: false } });
      block.dataset[name] = level;
    }
    const chart = new uPlot({ width, height: 200, series: seriesOpts, scales: { x: { time: true } }, axes: [{}, { size: 50 }] }, data, block);
    state.charts.push(chart);
  }
  holder.replaceChildren(...blocks);
}

function warningItem(w) {
  const measures = w.measures.map((m) => `${m.measure} ${m.value !== undefined ? fmtValue(m.value) : "?"}${m.threshold !== undefined ? ` (${t(m.bound)} ${fmtValue(m.threshold)})` : ""}`);
  return el("li", { "data-id": w.id, "data-groupid": w.groupid || "" }, el("time", { datetime: w.time }, fmtTime(w.time)), el("strong", {}, w.groupid || "?"), ` ${w.sensor}: `, measures.join(", "));
}

async function loadWarnings(append) {
  const query = { ...rangeQuery(), size: 50 };
  if (append && state.next) query.after = state.next;
  const page = await load("warnings", query);
  if (!page) return;
  const list = $("warnings");
  const items = page.warnings.map(warningItem);
  if (append) list.append(...items);
  else list.replaceChildren(...items);
  state.next = page.next || null;
  $("more").hidden = !state.next;
  $("warnings-empty").hidden = list.children.length > 0;
}

function select(groupid) {
  state.selected = groupid;
  for (const row of $("fleet").tBodies[0].rows) row.classList.toggle("selected", row.dataset.groupid === groupid);
  renderCharts();
}

async function refresh() {
  clearTimeout(state.timer);
  const [boxes, rules] = await Promise.all([load("boxes", rangeQuery()), state.rules.length ? null : load("rules")]);
  if (rules) state.rules = rules.rules;
  if (boxes) {
    state.boxes = boxes.boxes;
    if (!state.selected || !state.boxes.some((b) => b.groupid === state.selected)) state.selected = state.boxes.length ? state.boxes[0].groupid : null;
    renderFleet();
    renderMap();
    if (!state.rendered) {
      state.rendered = true;
      // The first meaningful render: the fleet table holds data (the browser test reads it).
      performance.mark("fleet-rendered");
      document.body.dataset.firstRender = "done";
    }
  }
  await Promise.all([renderCharts(), loadWarnings(false)]);
  $("updated").textContent = `${t("updated")} ${new Date().toLocaleTimeString(state.lang === "ko" ? "ko-KR" : "en-GB")}`;
  document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  if ($("auto").checked) state.timer = setTimeout(refresh, REFRESH_MS);
}

function init() {
  applyLanguage();
  for (const b of document.querySelectorAll("[data-lang]")) {
    b.addEventListener("click", () => {
      state.lang = b.dataset.lang;
      localStorage.setItem("lang", state.lang);
      applyLanguage();
      renderFleet();
      renderMap();
      renderCharts();
      loadWarnings(false);
    });
  }
  $("range").addEventListener("change", (e) => {
    state.range = e.target.value;
    refresh();
  });
  $("auto").addEventListener("change", (e) => {
    if (e.target.checked) refresh();
    else clearTimeout(state.timer);
  });
  $("more").addEventListener("click", () => loadWarnings(true));
  $("key-button").addEventListener("click", () => {
    $("key-form").hidden = !$("key-form").hidden;
  });
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.key = $("key-input").value.trim();
    if (state.key) localStorage.setItem("viewerKey", state.key);
    else localStorage.removeItem("viewerKey");
    $("key-form").hidden = true;
    refresh();
  });
  refresh();
}

init();
