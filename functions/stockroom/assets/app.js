// The Stockroom dashboard: stock health, sales per SKU and live updates, from the public API only.
// Every string from the server reaches the page through textContent or an attribute, never as markup.
'use strict';

(() => {
  // The stream names each event by its type, and EventSource only hands named events to listeners of that
  // name, so every type of the contract is listened to ("message" catches an unnamed one).
  const EVENT_TYPES = [
    'message',
    'lagged',
    'dev.stockroom.stock.changed.v1',
    'dev.stockroom.stock.low.v1',
    'dev.stockroom.stock.depleted.v1',
    'dev.stockroom.stock.replenished.v1',
    'dev.stockroom.reservation.held.v1',
    'dev.stockroom.reservation.committed.v1',
    'dev.stockroom.reservation.fulfilled.v1',
    'dev.stockroom.reservation.released.v1',
    'dev.stockroom.reservation.expired.v1',
    'dev.stockroom.reservation.refused.v1',
    'dev.stockroom.reconciliation.completed.v1',
  ];
  const FIELDS = [
    'sku', 'status', 'available', 'units_sold_24h', 'units_sold_7d',
    'velocity_per_day', 'days_of_cover', 'projected_stockout_at',
  ];
  const STATUS_RANK = { depleted: 0, low: 1, ok: 2 };
  const STATUS_LABEL = { depleted: 'Depleted', low: 'Low', ok: 'OK' };
  // Columns where the biggest figure is the interesting one sort descending on the first click.
  const DESCENDING_FIRST = new Set(['units_sold_24h', 'units_sold_7d', 'velocity_per_day']);
  const DEBOUNCE_MS = 300;
  // Figures may settle a moment after the event that announced them: look again shortly after a burst.
  const FOLLOW_UPS_MS = [1500, 5000];
  const PERIODIC_MS = 60000;
  const STREAM_RETRY_MS = 5000;
  const RANGES = {
    hour: { step: 3600e3, count: 48, label: '48 h' },
    day: { step: 86400e3, count: 30, label: '30 days' },
  };
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const state = {
    rows: [],
    loaded: false,
    sortKey: 'status',
    sortDir: 1,
    status: '',
    location: '',
    selected: null,
    range: 'hour',
    previous: null, // sku -> row of the last render, to mark what changed
    healthSeq: 0,
    chartSeq: 0,
    locationsKey: '',
  };

  const $ = (id) => document.getElementById(id);
  const intFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  const dateFormat = new Intl.DateTimeFormat('en-GB', { day: 'numeric', month: 'short', year: 'numeric' });
  const dateTimeFormat = new Intl.DateTimeFormat('en-GB', { dateStyle: 'medium', timeStyle: 'short' });
  const timeFormat = new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const hourFormat = new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit' });
  const dayFormat = new Intl.DateTimeFormat('en-GB', { day: 'numeric', month: 'short', timeZone: 'UTC' });
  const dayOfHourFormat = new Intl.DateTimeFormat('en-GB', { day: 'numeric', month: 'short' });

  // ---- fetching ---------------------------------------------------------------------------------------------

  async function fetchJson(path) {
    const res = await fetch(path, { headers: { accept: 'application/json' }, cache: 'no-store' });
    if (!res.ok) throw new Error(`${path.split('?')[0]} answered ${res.status}`);
    return res.json();
  }

  // The contract answers bare arrays; an object wrapping one (as `/v1/locations` does) is read the same way.
  function listOf(body) {
    if (Array.isArray(body)) return body;
    if (body && typeof body === 'object') {
      const inner = Object.values(body).find(Array.isArray);
      if (inner) return inner;
    }
    return [];
  }

  const problems = new Map();
  function setProblem(source, message) {
    if (message) problems.set(source, message);
    else problems.delete(source);
    const box = $('error');
    box.textContent = [...problems.values()].join(' · ');
    box.hidden = problems.size === 0;
  }

  // ---- formatting -------------------------------------------------------------------------------------------

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

  function formatField(field, value) {
    if (value === null || value === undefined) return '—';
    switch (field) {
      case 'available':
      case 'units_sold_24h':
      case 'units_sold_7d':
        return isNum(value) ? intFormat.format(value) : String(value);
      case 'velocity_per_day':
        return isNum(value) ? value.toFixed(value >= 10 ? 1 : 2) : String(value);
      case 'days_of_cover':
        return isNum(value) ? value.toFixed(1) : String(value);
      case 'projected_stockout_at': {
        const t = Date.parse(value);
        return Number.isNaN(t) ? String(value) : dateFormat.format(t);
      }
      case 'status':
        return STATUS_LABEL[value] || String(value);
      default:
        return String(value);
    }
  }

  // ---- the health table -------------------------------------------------------------------------------------

  function sortValue(row, key) {
    const v = row[key];
    if (v === null || v === undefined) return null;
    if (key === 'status') return STATUS_RANK[v] ?? 9;
    if (key === 'projected_stockout_at') {
      const t = Date.parse(v);
      return Number.isNaN(t) ? null : t;
    }
    return v;
  }

  function compareRows(a, b) {
    const { sortKey: key, sortDir: dir } = state;
    const va = sortValue(a, key);
    const vb = sortValue(b, key);
    let c = 0;
    if (va === null || vb === null) {
      c = va === vb ? 0 : va === null ? 1 : -1; // nothing to show sorts last either way
      if (c !== 0) return c;
    } else if (typeof va === 'string' || typeof vb === 'string') {
      c = String(va).localeCompare(String(vb), 'en', { numeric: true }) * dir;
    } else {
      c = (va - vb) * dir;
    }
    if (c !== 0) return c;
    if (key === 'status') {
      const cover = (x) => (isNum(x.days_of_cover) ? x.days_of_cover : Infinity);
      c = cover(a) - cover(b);
      if (c !== 0 && !Number.isNaN(c)) return c;
    }
    return String(a.sku).localeCompare(String(b.sku), 'en', { numeric: true });
  }

  function renderCounters() {
    const count = (status) => state.rows.filter((r) => r.status === status).length;
    const sold = state.rows.reduce((sum, r) => sum + (isNum(r.units_sold_24h) ? r.units_sold_24h : 0), 0);
    setCounter('count-depleted', count('depleted'));
    setCounter('count-low', count('low'));
    setCounter('count-skus', state.rows.length);
    setCounter('count-sold', sold);
  }

  function setCounter(id, value) {
    const el = $(id);
    const text = intFormat.format(value);
    if (el.textContent !== text && el.textContent !== '—') flash(el);
    el.textContent = text;
    el.dataset.value = String(value);
    el.closest('.counter').classList.toggle('is-zero', value === 0);
  }

  function flash(el) {
    el.classList.remove('changed');
    void el.offsetWidth; // restart the animation
    el.classList.add('changed');
  }

  function renderSortHeaders() {
    for (const th of document.querySelectorAll('#health-table th[data-sort]')) {
      const active = th.dataset.sort === state.sortKey;
      th.setAttribute('aria-sort', active ? (state.sortDir > 0 ? 'ascending' : 'descending') : 'none');
    }
  }

  function renderTable() {
    const tbody = $('health-rows');
    const shown = state.rows.filter((r) => !state.status || r.status === state.status).sort(compareRows);
    const previous = state.previous;
    const fragment = document.createDocumentFragment();
    for (const row of shown) {
      const tr = document.createElement('tr');
      tr.dataset.sku = String(row.sku);
      tr.dataset.status = String(row.status);
      tr.tabIndex = 0;
      if (row.sku === state.selected) {
        tr.classList.add('selected');
        tr.setAttribute('aria-selected', 'true');
      }
      const before = previous ? previous.get(row.sku) : undefined;
      for (const field of FIELDS) {
        const td = document.createElement('td');
        const value = row[field];
        td.dataset.field = field;
        td.dataset.value = value === null || value === undefined ? '' : String(value);
        if (field === 'status') {
          const badge = document.createElement('span');
          const known = Object.hasOwn(STATUS_RANK, value) ? value : 'unknown';
          badge.className = `badge badge-${known}`;
          badge.textContent = formatField(field, value);
          td.appendChild(badge);
        } else {
          td.textContent = formatField(field, value);
          if (field !== 'sku') td.className = 'num';
          if (field === 'sku') td.className = 'sku';
        }
        if (value === null || value === undefined) td.classList.add('none');
        if (field === 'projected_stockout_at' && value) {
          const t = Date.parse(value);
          if (!Number.isNaN(t)) td.title = dateTimeFormat.format(t);
        }
        // Compared as shown: the projected date moves with the clock but the day rarely does.
        if (previous && (!before || formatField(field, before[field]) !== formatField(field, value))) {
          td.classList.add('changed');
        }
        tr.appendChild(td);
      }
      fragment.appendChild(tr);
    }
    tbody.replaceChildren(fragment);
    const nothing = state.loaded && state.rows.length === 0;
    $('empty').hidden = !(nothing && !state.location);
    $('no-match').hidden = !((state.rows.length > 0 && shown.length === 0) || (nothing && state.location));
    $('health-table').classList.toggle('is-empty', shown.length === 0);
    $('table-hint').hidden = shown.length === 0;
    renderSortHeaders();
  }

  async function refreshHealth() {
    const seq = ++state.healthSeq;
    const query = state.location ? `?location=${encodeURIComponent(state.location)}` : '';
    try {
      const rows = listOf(await fetchJson(`/v1/analytics/stock-health${query}`));
      if (seq !== state.healthSeq) return; // a newer request is on its way
      if (state.loaded) state.previous = new Map(state.rows.map((r) => [r.sku, r]));
      state.rows = rows.filter((r) => r && typeof r === 'object' && r.sku !== undefined);
      state.loaded = true;
      renderCounters();
      renderTable();
      const now = new Date();
      const stamp = $('last-updated');
      stamp.textContent = timeFormat.format(now);
      stamp.dateTime = now.toISOString();
      setProblem('health', null);
    } catch (err) {
      if (seq === state.healthSeq) setProblem('health', `Could not load stock health: ${err.message}`);
    }
  }

  // ---- top sellers ------------------------------------------------------------------------------------------

  async function refreshTopSellers() {
    try {
      const items = listOf(await fetchJson('/v1/analytics/top-sellers?window=24h&limit=5'));
      const list = $('top-sellers');
      const max = Math.max(1, ...items.map((i) => (isNum(i.units) ? i.units : 0)));
      const fragment = document.createDocumentFragment();
      for (const item of items) {
        const li = document.createElement('li');
        li.dataset.sku = String(item.sku);
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'top-sku';
        button.textContent = String(item.sku);
        button.addEventListener('click', () => selectSku(String(item.sku)));
        const figures = document.createElement('span');
        figures.className = 'top-units';
        const units = isNum(item.units) ? item.units : 0;
        const orders = isNum(item.orders) ? item.orders : 0;
        figures.textContent = `${intFormat.format(units)} units`;
        figures.title = `${intFormat.format(orders)} orders`;
        const bar = document.createElement('span');
        bar.className = 'top-bar';
        const fill = document.createElement('span');
        fill.style.width = `${Math.max(2, (units / max) * 100)}%`;
        bar.appendChild(fill);
        li.append(button, figures, bar);
        fragment.appendChild(li);
      }
      list.replaceChildren(fragment);
      $('top-empty').hidden = items.length > 0;
      setProblem('top', null);
    } catch (err) {
      setProblem('top', `Could not load top sellers: ${err.message}`);
    }
  }

  // ---- locations --------------------------------------------------------------------------------------------

  async function refreshLocations() {
    try {
      const locations = listOf(await fetchJson('/v1/locations'))
        .map((l) => ({ id: String(l.id ?? l.location ?? ''), name: String(l.name ?? ''), priority: l.priority }))
        .filter((l) => l.id !== '')
        .sort((a, b) => (a.priority ?? 0) - (b.priority ?? 0) || a.id.localeCompare(b.id));
      const key = JSON.stringify(locations);
      if (key === state.locationsKey) return; // unchanged: leave an open menu alone
      state.locationsKey = key;
      const select = $('filter-location');
      const all = document.createElement('option');
      all.value = '';
      all.textContent = 'All locations';
      const options = [all];
      for (const l of locations) {
        const option = document.createElement('option');
        option.value = l.id;
        option.textContent = l.name && l.name !== l.id ? `${l.name} (${l.id})` : l.id;
        options.push(option);
      }
      select.replaceChildren(...options);
      select.value = locations.some((l) => l.id === state.location) ? state.location : '';
      setProblem('locations', null);
    } catch (err) {
      setProblem('locations', `Could not load locations: ${err.message}`);
    }
  }

  // ---- the sales chart --------------------------------------------------------------------------------------

  function svg(name, attrs = {}, parent = null) {
    const el = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    if (parent) parent.appendChild(el);
    return el;
  }

  // 1, 2 or 5 times a power of ten, at least `x` (and at least 1: units are whole).
  function niceCeil(x) {
    if (!(x > 1)) return 1;
    const p = 10 ** Math.floor(Math.log10(x));
    for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
    return 10 * p;
  }

  function selectSku(sku) {
    state.selected = sku;
    for (const tr of document.querySelectorAll('#health-rows tr')) {
      const on = tr.dataset.sku === sku;
      tr.classList.toggle('selected', on);
      if (on) tr.setAttribute('aria-selected', 'true');
      else tr.removeAttribute('aria-selected');
    }
    $('chart-sku').textContent = sku;
    const panel = $('chart-panel');
    const wasHidden = panel.hidden;
    panel.hidden = false;
    const chart = $('chart');
    chart.replaceChildren();
    chart.dataset.state = 'loading';
    $('chart-total').textContent = '';
    refreshChart();
    if (wasHidden) panel.scrollIntoView({ block: 'nearest' });
  }

  function closeChart() {
    state.selected = null;
    state.chartSeq++;
    $('chart-panel').hidden = true;
    for (const tr of document.querySelectorAll('#health-rows tr.selected')) {
      tr.classList.remove('selected');
      tr.removeAttribute('aria-selected');
    }
  }

  async function refreshChart() {
    const sku = state.selected;
    if (sku === null) return;
    const seq = ++state.chartSeq;
    const range = RANGES[state.range];
    const now = Date.now();
    const end = Math.floor(now / range.step) * range.step + range.step;
    const start = end - range.count * range.step;
    const query = new URLSearchParams({
      bucket: state.range,
      from: new Date(start).toISOString(),
      to: new Date(now).toISOString(),
    });
    try {
      const series = listOf(await fetchJson(`/v1/analytics/skus/${encodeURIComponent(sku)}/sales?${query}`));
      if (seq !== state.chartSeq) return;
      // The series may leave out empty buckets: lay every bucket of the range out and fill in what came back.
      const buckets = Array.from({ length: range.count }, (_, i) => ({ start: start + i * range.step, units: 0, orders: 0 }));
      for (const point of series) {
        const t = Date.parse(point.start);
        if (Number.isNaN(t)) continue;
        const i = Math.floor((t - start) / range.step);
        if (i < 0 || i >= buckets.length) continue;
        buckets[i].units += isNum(point.units) ? point.units : 0;
        buckets[i].orders += isNum(point.orders) ? point.orders : 0;
      }
      drawChart(buckets, range);
      setProblem('chart', null);
    } catch (err) {
      if (seq !== state.chartSeq) return;
      $('chart').dataset.state = 'error';
      setProblem('chart', `Could not load sales of ${sku}: ${err.message}`);
    }
  }

  function drawChart(buckets, range) {
    // Drawn at the size it is shown, so that its text is the page's size.
    const chart = $('chart');
    const W = Math.max(480, Math.round(chart.clientWidth - 2 * 17));
    const H = 240;
    const m = { top: 22, right: 12, bottom: 30, left: 44 };
    const plotW = W - m.left - m.right;
    const plotH = H - m.top - m.bottom;
    const maxUnits = Math.max(0, ...buckets.map((b) => b.units));
    const top = niceCeil(maxUnits);
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart-svg' });
    const title = svg('title', {}, root);
    const totalUnits = buckets.reduce((s, b) => s + b.units, 0);
    const totalOrders = buckets.reduce((s, b) => s + b.orders, 0);
    title.textContent = `Units sold per ${state.range}, last ${range.label}`;

    // Horizontal grid at whole-unit ticks.
    const tickStep = Math.max(1, niceCeil(top / 4));
    for (let v = 0; v <= top; v += tickStep) {
      const y = m.top + plotH - (v / top) * plotH;
      svg('line', { x1: m.left, x2: W - m.right, y1: y, y2: y, class: v === 0 ? 'axis' : 'grid' }, root);
      const label = svg('text', { x: m.left - 8, y: y + 4, class: 'tick tick-y' }, root);
      label.textContent = intFormat.format(v);
    }

    const band = plotW / buckets.length;
    const barW = Math.max(1, band * 0.72);
    const labelEvery = state.range === 'hour' ? 6 : 5;
    const lastIndex = buckets.length - 1;
    buckets.forEach((b, i) => {
      const x = m.left + i * band;
      const when = state.range === 'hour'
        ? `${dayOfHourFormat.format(b.start)} ${hourFormat.format(b.start)}`
        : dayFormat.format(b.start);
      if (b.units > 0) {
        const h = Math.max(1, (b.units / top) * plotH);
        const rect = svg('rect', {
          x: (x + (band - barW) / 2).toFixed(2),
          y: (m.top + plotH - h).toFixed(2),
          width: barW.toFixed(2),
          height: h.toFixed(2),
          rx: Math.min(3, barW / 3).toFixed(2),
          class: i === lastIndex ? 'bar bar-current' : 'bar',
          'data-units': b.units,
          'data-start': new Date(b.start).toISOString(),
        }, root);
        const tip = svg('title', {}, rect);
        tip.textContent = `${when}: ${intFormat.format(b.units)} units, ${intFormat.format(b.orders)} orders`;
        if (band >= 16) {
          const value = svg('text', { x: x + band / 2, y: m.top + plotH - h - 5, class: 'bar-value' }, root);
          value.textContent = intFormat.format(b.units);
        }
      }
      // Hours are labelled at 00, 06, 12 and 18 local time (midnight by its date), days every fifth day.
      const hourOfDay = new Date(b.start).getHours();
      const labelled = state.range === 'hour' ? hourOfDay % labelEvery === 0 : (lastIndex - i) % labelEvery === 0;
      if (labelled) {
        const label = svg('text', { x: x + band / 2, y: H - m.bottom + 18, class: 'tick tick-x' }, root);
        label.textContent = state.range === 'hour'
          ? (hourOfDay === 0 ? dayOfHourFormat.format(b.start) : hourFormat.format(b.start))
          : dayFormat.format(b.start);
        if (state.range === 'hour' && hourOfDay === 0) label.classList.add('tick-day');
      }
    });

    if (maxUnits === 0) {
      const note = svg('text', { x: m.left + plotW / 2, y: m.top + plotH / 2, class: 'chart-note' }, root);
      note.textContent = `No sales in the last ${range.label}`;
    }

    chart.replaceChildren(root);
    chart.dataset.state = maxUnits === 0 ? 'empty' : 'ready';
    chart.dataset.bars = String(buckets.filter((b) => b.units > 0).length);
    $('chart-total').textContent =
      `${intFormat.format(totalUnits)} units · ${intFormat.format(totalOrders)} orders in ${range.label}`;
  }

  function setRange(range) {
    if (!Object.hasOwn(RANGES, range) || range === state.range) return;
    state.range = range;
    for (const b of document.querySelectorAll('.toggle button')) {
      b.setAttribute('aria-pressed', String(b.dataset.range === range));
    }
    $('chart').dataset.state = 'loading';
    refreshChart();
  }

  // ---- live updates -----------------------------------------------------------------------------------------

  let debounceTimer = null;
  const followUpTimers = [];

  function refreshAll() {
    refreshHealth();
    refreshTopSellers();
    refreshChart();
  }

  function scheduleRefresh() {
    clearTimeout(debounceTimer);
    debounceTimer = setTimeout(refreshAll, DEBOUNCE_MS);
    while (followUpTimers.length) clearTimeout(followUpTimers.pop());
    for (const ms of FOLLOW_UPS_MS) followUpTimers.push(setTimeout(refreshAll, DEBOUNCE_MS + ms));
  }

  function setConnection(mode, detail) {
    const el = $('connection');
    el.dataset.state = mode;
    $('connection-text').textContent = { live: 'Live', connecting: 'Connecting…', offline: 'Offline' }[mode];
    el.title = detail || 'Live event stream';
  }

  let stream = null;
  let everOpened = false;

  function connect() {
    setConnection('connecting');
    stream = new EventSource('/v1/events/stream');
    stream.onopen = () => {
      setConnection('live');
      // Events may have been missed while the stream was down.
      if (everOpened) scheduleRefresh();
      everOpened = true;
    };
    stream.onerror = () => {
      if (stream.readyState === EventSource.CLOSED) {
        // The browser gave up (the server answered something other than a stream): try again later.
        setConnection('offline', 'Event stream closed; retrying');
        stream.close();
        setTimeout(connect, STREAM_RETRY_MS);
      } else {
        setConnection('connecting', 'Reconnecting to the event stream');
      }
    };
    const onEvent = (event) => {
      setConnection('live', `Last event: ${event.type} at ${timeFormat.format(new Date())}`);
      scheduleRefresh();
    };
    for (const type of EVENT_TYPES) stream.addEventListener(type, onEvent);
  }

  // ---- wiring -----------------------------------------------------------------------------------------------

  function init() {
    for (const th of document.querySelectorAll('#health-table th[data-sort]')) {
      th.querySelector('button').addEventListener('click', () => {
        const key = th.dataset.sort;
        if (state.sortKey === key) state.sortDir = -state.sortDir;
        else {
          state.sortKey = key;
          state.sortDir = DESCENDING_FIRST.has(key) ? -1 : 1;
        }
        state.previous = null; // a re-sort is not a change of figures
        renderTable();
      });
    }
    $('filter-status').addEventListener('change', (e) => {
      state.status = e.target.value;
      state.previous = null;
      renderTable();
    });
    $('filter-location').addEventListener('change', (e) => {
      state.location = e.target.value;
      state.previous = null;
      state.loaded = false;
      const option = e.target.selectedOptions[0];
      $('scope-hint').textContent = state.location ? `at ${option ? option.textContent : state.location}` : 'all locations';
      refreshHealth();
    });
    const rows = $('health-rows');
    rows.addEventListener('click', (e) => {
      const tr = e.target.closest('tr[data-sku]');
      if (tr) selectSku(tr.dataset.sku);
    });
    rows.addEventListener('keydown', (e) => {
      const tr = e.target.closest('tr[data-sku]');
      if (tr && (e.key === 'Enter' || e.key === ' ')) {
        e.preventDefault();
        selectSku(tr.dataset.sku);
      }
    });
    for (const b of document.querySelectorAll('.toggle button')) {
      b.addEventListener('click', () => setRange(b.dataset.range));
    }
    $('chart-close').addEventListener('click', closeChart);

    renderSortHeaders();
    refreshLocations();
    refreshAll();
    connect();
    // Windows roll on with the clock even when nothing is sold.
    setInterval(() => {
      refreshLocations();
      refreshAll();
    }, PERIODIC_MS);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
