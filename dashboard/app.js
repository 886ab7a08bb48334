/*
 * cfcost dashboard: chat panel and usage panel.
 *
 * Plain JavaScript, no build step, no external resources.  Every string that
 * comes from the API reaches the page through textContent or an attribute
 * set with setAttribute: nothing is ever parsed as HTML.
 *
 * Deep link (see dashboard/README.md):
 *   /#key=cfk_...&model=@cf/meta/llama-3.1-8b-instruct&say=Hello&say=More
 * stores the key, selects the model and sends each `say` in order, as if
 * typed.  The fragment is removed from the address bar once read.
 */
(function () {
  'use strict';

  var KEY_STORAGE = 'cfcost.apiKey';
  var MODEL_STORAGE = 'cfcost.model';
  var LOG_PAGE = 50;
  var SVG_NS = 'http://www.w3.org/2000/svg';

  var state = {
    key: '',
    models: [],
    modelById: Object.create(null),
    messages: [],          // the conversation sent with every chat request
    sending: false,
    sessionMicro: 0,       // integer micro-USD of this conversation's replies
    sessionTokens: 0,
    sessionReplies: 0,
    sessionUnknown: 0,
    sessionEstimated: 0,
    usageSeq: 0,
    logsCursor: null,
    logsShown: 0,
    chartPoints: null,
    usageTimer: null
  };

  // ------------------------------------------------------------------
  // small helpers

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svg(tag, attrs) {
    var e = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function store(k, v) {
    try {
      if (v === null || v === undefined || v === '') window.localStorage.removeItem(k);
      else window.localStorage.setItem(k, v);
    } catch (e) { /* storage disabled: the key lives for this page only */ }
  }

  function load(k) {
    try { return window.localStorage.getItem(k) || ''; } catch (e) { return ''; }
  }

  function num(v) {
    if (v === null || v === undefined || v === '') return NaN;
    var n = Number(v);
    return isFinite(n) ? n : NaN;
  }

  function fmtInt(v) {
    var n = num(v);
    return isNaN(n) ? '–' : Math.round(n).toLocaleString('en-US');
  }

  function fmtUsd6(v) {
    var n = num(v);
    return isNaN(n) ? '–' : '$' + n.toFixed(6);
  }

  // Short, exact-looking price: 0.282 -> "0.282", 3 -> "3.00", 0.01 -> "0.01"
  function fmtPrice(v) {
    var n = num(v);
    if (isNaN(n)) return '?';
    var s = n.toFixed(6).replace(/0+$/, '');
    var dot = s.indexOf('.');
    if (s.length - dot - 1 < 2) s = n.toFixed(2);
    return s;
  }

  // Compact axis label for a cost.
  function fmtAxisUsd(n) {
    if (n === 0) return '$0';
    if (n >= 100) return '$' + n.toFixed(0);
    if (n >= 1) return '$' + n.toFixed(2);
    var digits = Math.min(6, Math.max(2, 1 - Math.floor(Math.log10(n)) + 1));
    return '$' + n.toFixed(digits);
  }

  // Accepts unix seconds, unix milliseconds (numbers or digit strings) and
  // date strings; returns a Date or null.
  function parseTime(v) {
    if (v === null || v === undefined || v === '') return null;
    var ms;
    if (typeof v === 'number' || /^\d+(\.\d+)?$/.test(String(v))) {
      var n = Number(v);
      ms = n < 1e11 ? n * 1000 : n;
    } else {
      ms = Date.parse(String(v));
    }
    if (!isFinite(ms)) return null;
    return new Date(ms);
  }

  function pad2(n) { return (n < 10 ? '0' : '') + n; }

  function fmtTime(v) {
    var d = parseTime(v);
    if (!d) return v === null || v === undefined ? '–' : String(v);
    return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) +
      ' ' + pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
  }

  var MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

  // Day buckets are UTC days.
  function fmtDay(v) {
    var d = parseTime(v);
    if (!d) return String(v);
    return MONTHS[d.getUTCMonth()] + ' ' + d.getUTCDate();
  }

  function fmtDayLong(v) {
    var d = parseTime(v);
    if (!d) return String(v);
    return d.getUTCFullYear() + '-' + pad2(d.getUTCMonth() + 1) + '-' + pad2(d.getUTCDate());
  }

  function maskKey(k) {
    if (k.length <= 12) return k.slice(0, 2) + '…';
    return k.slice(0, 6) + '…' + k.slice(-4);
  }

  // "" is a request refused before any model was read; "(unpriced)" counts
  // every model not in the price table (its name stays in the record)
  function modelLabel(id) {
    var m = state.modelById[id];
    if (m && m.name) return String(m.name);
    if (id === '' || id === null || id === undefined) return '(no model)';
    return String(id);
  }

  // ------------------------------------------------------------------
  // HTTP

  // Resolves to {ok, status, data (parsed JSON or null), text, network}.
  function api(method, path, body) {
    var headers = { 'Accept': 'application/json' };
    if (state.key) headers['X-API-Key'] = state.key;
    var init = { method: method, headers: headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (r) {
      return r.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        return { ok: r.ok, status: r.status, statusText: r.statusText, data: data, text: text, network: false };
      });
    }, function (err) {
      return { ok: false, status: 0, statusText: '', data: null, text: String(err), network: true };
    });
  }

  function detailOf(res) {
    if (res.network) return 'the gateway could not be reached';
    if (res.data && typeof res.data === 'object' && typeof res.data.detail === 'string') {
      return res.data.detail;
    }
    if (res.statusText) return res.statusText;
    return '';
  }

  function errorText(res) {
    if (res.network) return 'Network error: the gateway could not be reached';
    var d = detailOf(res);
    return 'HTTP ' + res.status + (d ? ': ' + d : '');
  }

  // ------------------------------------------------------------------
  // API key

  function setKey(k) {
    state.key = (k || '').trim();
    store(KEY_STORAGE, state.key);
    renderKey();
  }

  function renderKey() {
    var has = !!state.key;
    $('key-form').hidden = has;
    $('key-saved').hidden = !has;
    $('key-masked').textContent = has ? maskKey(state.key) : '';
    $('key-masked').setAttribute('title', has ? 'Stored in this browser (localStorage)' : '');
    document.body.setAttribute('data-key', has ? 'set' : 'none');
  }

  function initKey() {
    state.key = load(KEY_STORAGE);
    renderKey();
    $('key-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var v = $('key-input').value.trim();
      if (!v) { $('key-input').focus(); return; }
      $('key-input').value = '';
      setKey(v);
      refreshUsage();
    });
    $('key-forget').addEventListener('click', function () {
      setKey('');
      resetUsage();
      $('key-input').focus();
    });
  }

  // ------------------------------------------------------------------
  // models

  function loadModels(preferred) {
    var sel = $('model-select');
    return api('GET', '/api/ai/models').then(function (res) {
      var list = res.ok && res.data && Array.isArray(res.data.models) ? res.data.models : null;
      clear(sel);
      if (!list) {
        sel.appendChild(el('option', null, 'Models unavailable'));
        sel.disabled = true;
        showModelsError('Could not load the model list (' + errorText(res) + ')');
        return;
      }
      state.models = list.filter(function (m) { return m && typeof m.id === 'string'; });
      state.modelById = Object.create(null);
      var groups = [];
      var byProvider = Object.create(null);
      state.models.forEach(function (m) {
        state.modelById[m.id] = m;
        var p = m.provider ? String(m.provider) : 'Other';
        if (!byProvider[p]) {
          byProvider[p] = el('optgroup');
          byProvider[p].setAttribute('label', p);
          groups.push(byProvider[p]);
        }
        var pr = m.pricing || {};
        var o = el('option', null, (m.name || m.id) + ' ($' + fmtPrice(pr.input) +
          ' / $' + fmtPrice(pr.output) + ' per M)');
        o.value = m.id;
        if (m.description) o.setAttribute('title', String(m.description));
        byProvider[p].appendChild(o);
      });
      groups.forEach(function (g) { sel.appendChild(g); });
      sel.disabled = state.models.length === 0;

      var want = preferred || load(MODEL_STORAGE);
      if (preferred && !state.modelById[preferred]) {
        showModelsError('Unknown model ' + preferred + '; pick one from the list.');
        want = load(MODEL_STORAGE);
      }
      if (want && state.modelById[want]) sel.value = want;
      else if (state.modelById['@cf/meta/llama-3.1-8b-instruct']) sel.value = '@cf/meta/llama-3.1-8b-instruct';
      renderModelInfo();
    });
  }

  function showModelsError(text) {
    var box = $('models-error');
    box.textContent = text;
    box.hidden = false;
  }

  function renderModelInfo() {
    var m = state.modelById[$('model-select').value];
    var price = $('model-price');
    var desc = $('model-desc');
    if (!m) { price.textContent = ''; desc.textContent = ''; return; }
    var pr = m.pricing || {};
    var parts = ['💰 $' + fmtPrice(pr.input) + '/M input', '$' + fmtPrice(pr.output) + '/M output'];
    if (pr.cached_input !== undefined && pr.cached_input !== null) {
      parts.push('$' + fmtPrice(pr.cached_input) + '/M cached input');
    }
    price.textContent = parts.join(' · ');
    desc.textContent = m.description ? String(m.description) : '';
  }

  // ------------------------------------------------------------------
  // chat

  function scrollMessages() {
    var box = $('messages');
    box.scrollTop = box.scrollHeight;
  }

  function addBubble(role, text) {
    $('chat-empty').hidden = true;
    var row = el('div', 'msg msg-' + role);
    var bubble = el('div', 'bubble', text);
    row.appendChild(bubble);
    $('messages').appendChild(row);
    scrollMessages();
    return row;
  }

  function addReply(data, model) {
    var text = typeof data.response === 'string' ? data.response
      : (data.response === null || data.response === undefined ? '' : JSON.stringify(data.response));
    var row = addBubble('assistant', text || '(empty reply)');
    if (!text) row.firstChild.classList.add('bubble-empty');
    var meta = el('div', 'msg-meta');
    var cost = num(data.cost_usd);
    var tokens = num(data.total_tokens);
    if (isNaN(cost) || isNaN(tokens)) {
      meta.appendChild(el('span', 'usage-unknown', 'usage unknown'));
      meta.setAttribute('title', 'Workers AI reported no token usage for this reply');
      state.sessionUnknown++;
    } else {
      meta.appendChild(el('span', 'cost', '💰 ' + fmtUsd6(cost)));
      meta.appendChild(el('span', 'sep', ' · '));
      meta.appendChild(el('span', 'tokens', '🪙 ' + fmtInt(tokens) + ' tokens'));
      meta.setAttribute('title', fmtInt(data.input_tokens) + ' input + ' +
        fmtInt(data.output_tokens) + ' output tokens' +
        (data.estimated === true ? ' (estimated: Workers AI reported no usable usage; this is what is billed)' : ''));
      if (data.estimated === true) {
        meta.appendChild(el('span', 'usage-estimated', ' (estimated)'));
        state.sessionEstimated++;
      }
      state.sessionMicro += Math.round(cost * 1e6);
      state.sessionTokens += tokens;
    }
    var who = el('span', 'msg-model', modelLabel(data.model || model));
    meta.appendChild(who);
    row.appendChild(meta);
    state.sessionReplies++;
    renderTotals();
    scrollMessages();
  }

  function addError(res) {
    var row = el('div', 'msg msg-error');
    var box = el('div', 'error-box', errorText(res));
    box.setAttribute('role', 'alert');
    row.appendChild(box);
    $('messages').appendChild(row);
    scrollMessages();
  }

  function renderTotals() {
    var t = $('chat-totals');
    if (!state.sessionReplies) { t.hidden = true; t.textContent = ''; return; }
    var s = 'This conversation: ' + fmtUsd6(state.sessionMicro / 1e6) + ' · ' +
      fmtInt(state.sessionTokens) + ' tokens · ' + state.sessionReplies +
      (state.sessionReplies === 1 ? ' reply' : ' replies');
    if (state.sessionUnknown) s += ' (' + state.sessionUnknown + ' with usage unknown)';
    if (state.sessionEstimated) s += ' (' + state.sessionEstimated + ' estimated)';
    t.textContent = s;
    t.hidden = false;
  }

  function setSending(on) {
    state.sending = on;
    $('chat-send').disabled = on;
    $('chat-send').textContent = on ? 'Sending…' : 'Send';
    document.body.setAttribute('data-chat', on ? 'sending' : 'idle');
  }

  // Sends one user message with the whole conversation; resolves when done.
  function send(text) {
    if (state.sending || !text || !text.trim()) return Promise.resolve(false);
    if (!state.key) {
      addError({ network: false, status: 401, data: { detail: 'enter your API key first (top right)' } });
      return Promise.resolve(false);
    }
    var model = $('model-select').value;
    var msg = { role: 'user', content: text };
    state.messages.push(msg);
    var row = addBubble('user', text);
    var pending = el('div', 'msg msg-assistant msg-pending');
    pending.appendChild(el('div', 'bubble', 'Thinking…'));
    $('messages').appendChild(pending);
    scrollMessages();
    setSending(true);
    return api('POST', '/api/ai/chat', { model: model, messages: state.messages.slice() })
      .then(function (res) {
        pending.parentNode.removeChild(pending);
        if (res.ok && res.data && typeof res.data === 'object' && !Array.isArray(res.data)) {
          state.messages.push({ role: 'assistant', content: String(res.data.response === undefined || res.data.response === null ? '' : res.data.response) });
          addReply(res.data, model);
          scheduleUsageRefresh();
          return true;
        }
        if (res.ok) res = { ok: false, status: res.status, statusText: 'unreadable reply', data: null };
        // The failed message leaves the conversation (so a retry does not
        // send it twice); its bubble stays, marked as not sent.
        var i = state.messages.indexOf(msg);
        if (i >= 0) state.messages.splice(i, 1);
        row.classList.add('msg-failed');
        row.setAttribute('title', 'Not sent: not part of the conversation');
        addError(res);
        if (!$('chat-input').value) $('chat-input').value = text;
        if (res.status && res.status !== 401) scheduleUsageRefresh();
        return false;
      })
      .then(function (ok) { setSending(false); return ok; });
  }

  function newChat() {
    state.messages = [];
    state.sessionMicro = 0;
    state.sessionTokens = 0;
    state.sessionReplies = 0;
    state.sessionUnknown = 0;
    state.sessionEstimated = 0;
    var box = $('messages');
    Array.prototype.slice.call(box.querySelectorAll('.msg')).forEach(function (n) {
      box.removeChild(n);
    });
    $('chat-empty').hidden = false;
    renderTotals();
  }

  function initChat() {
    $('model-select').addEventListener('change', function () {
      store(MODEL_STORAGE, $('model-select').value);
      renderModelInfo();
    });
    $('chat-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var input = $('chat-input');
      var text = input.value;
      if (!text.trim() || state.sending) return;
      input.value = '';
      send(text).then(function () { input.focus(); });
    });
    $('chat-input').addEventListener('keydown', function (ev) {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        $('chat-form').requestSubmit ? $('chat-form').requestSubmit()
          : $('chat-form').dispatchEvent(new Event('submit', { cancelable: true }));
      }
    });
    $('chat-clear').addEventListener('click', newChat);
    setSending(false);
  }

  // ------------------------------------------------------------------
  // usage

  function setUsageState(s) { document.body.setAttribute('data-usage', s); }

  function showUsageStatus(kind, title, detail) {
    var box = $('usage-status');
    clear(box);
    box.className = 'usage-status usage-status-' + kind;
    box.appendChild(el('div', 'usage-status-title', title));
    if (detail) box.appendChild(el('div', 'usage-status-detail', detail));
    box.hidden = false;
    if (kind === 'error') box.setAttribute('role', 'alert'); else box.removeAttribute('role');
  }

  function resetUsage() {
    state.usageSeq++;
    $('usage-refresh').disabled = false;
    $('usage-refresh').textContent = 'Refresh';
    $('usage-body').hidden = true;
    $('usage-updated').textContent = '';
    showUsageStatus('info', 'Enter your API key to see your usage.', '');
    setUsageState('nokey');
  }

  function scheduleUsageRefresh() {
    // Records reach the usage service asynchronously: give them a moment.
    if (state.usageTimer) clearTimeout(state.usageTimer);
    state.usageTimer = setTimeout(function () { state.usageTimer = null; refreshUsage(); }, 1200);
  }

  function refreshUsage() {
    if (!state.key) { resetUsage(); return Promise.resolve(); }
    var seq = ++state.usageSeq;
    var btn = $('usage-refresh');
    btn.disabled = true;
    btn.textContent = 'Refreshing…';
    setUsageState('loading');
    if ($('usage-body').hidden && $('usage-status').hidden) {
      showUsageStatus('info', 'Loading usage…', '');
    }
    return Promise.all([
      api('GET', '/api/usage'),
      api('GET', '/api/usage/logs?limit=' + LOG_PAGE),
      api('GET', '/api/usage/timeseries?bucket=day')
    ]).then(function (r) {
      if (seq !== state.usageSeq) return;
      btn.disabled = false;
      btn.textContent = 'Refresh';
      var sum = r[0], logs = r[1], ts = r[2];
      var summaryOk = sum.ok && sum.data && typeof sum.data === 'object';
      if (!summaryOk) {
        $('usage-body').hidden = true;
        if (sum.status === 401 || sum.status === 403) {
          showUsageStatus('error', 'Usage unavailable: API key refused (HTTP ' + sum.status + ')', detailOf(sum));
        } else if (sum.network) {
          showUsageStatus('error', 'Usage service unavailable (network error)', 'The gateway could not be reached. Try Refresh in a moment.');
        } else {
          var d = detailOf(sum);
          showUsageStatus('error', 'Usage service unavailable (HTTP ' + sum.status + ')',
            (d && d !== sum.statusText ? d + '. ' : '') +
            'The usage API is not answering on this gateway; chat still works and its requests are recorded.');
        }
        setUsageState('unavailable');
        return;
      }
      $('usage-status').hidden = true;
      $('usage-body').hidden = false;
      renderSummary(sum.data);
      renderLogs(logs, true);
      renderTimeseries(ts);
      $('usage-updated').textContent = 'Updated ' + fmtTime(Date.now()).slice(11);
      setUsageState('ready');
    });
  }

  function renderSummary(d) {
    $('card-cost').textContent = fmtUsd6(d.total_cost_usd);
    var reqs = num(d.total_requests);
    var cost = num(d.total_cost_usd);
    $('card-cost-sub').textContent = reqs > 0 && !isNaN(cost)
      ? 'avg ' + fmtUsd6(cost / reqs) + ' per request' : 'USD';
    $('card-requests').textContent = fmtInt(d.total_requests);
    var nModels = d.by_model && typeof d.by_model === 'object' ? Object.keys(d.by_model).length : 0;
    $('card-requests-sub').textContent = nModels + (nModels === 1 ? ' model' : ' models');
    $('card-tokens').textContent = fmtInt(d.total_tokens);
    $('card-tokens-sub').textContent = fmtInt(d.total_input_tokens) + ' in · ' +
      fmtInt(d.total_output_tokens) + ' out';
    renderByModel(d.by_model || {}, cost);
  }

  function renderByModel(byModel, total) {
    var box = $('by-model');
    clear(box);
    var rows = Object.keys(byModel).map(function (id) {
      var m = byModel[id] || {};
      return { id: id, m: m, cost: num(m.cost) || 0 };
    });
    rows.sort(function (a, b) { return b.cost - a.cost || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0); });
    if (!rows.length) {
      box.appendChild(el('div', 'empty', 'No requests yet.'));
      return;
    }
    var sum = rows.reduce(function (s, r) { return s + r.cost; }, 0);
    if (!(total > 0)) total = sum;
    rows.forEach(function (r) {
      var row = el('div', 'model-cost');
      row.setAttribute('data-model', r.id);
      var head = el('div', 'model-cost-head');
      var name = el('div', 'model-cost-name');
      name.appendChild(el('span', 'model-cost-label', modelLabel(r.id)));
      if (state.modelById[r.id]) name.appendChild(el('span', 'model-cost-id', r.id));
      head.appendChild(name);
      head.appendChild(el('div', 'model-cost-value cost', fmtUsd6(r.cost)));
      row.appendChild(head);
      var share = total > 0 ? Math.min(1, r.cost / total) : 0;
      var bar = el('div', 'bar');
      var fill = el('div', 'bar-fill');
      fill.style.width = (share * 100).toFixed(2) + '%';
      bar.appendChild(fill);
      bar.setAttribute('title', (share * 100).toFixed(1) + '% of the total cost');
      row.appendChild(bar);
      row.appendChild(el('div', 'model-cost-sub',
        fmtInt(r.m.requests) + (num(r.m.requests) === 1 ? ' request · ' : ' requests · ') + fmtInt(r.m.tokens) + ' tokens (' +
        fmtInt(r.m.input_tokens) + ' in · ' + fmtInt(r.m.output_tokens) + ' out) · ' +
        (share * 100).toFixed(1) + '%'));
      box.appendChild(row);
    });
  }

  function renderLogs(res, replace) {
    var body = $('logs-body');
    var note = $('logs-note');
    var more = $('logs-more');
    if (replace) { clear(body); state.logsShown = 0; state.logsCursor = null; }
    if (!(res.ok && res.data && Array.isArray(res.data.logs))) {
      note.textContent = 'Request log unavailable (' + errorText(res) + ').';
      note.className = 'note-error small';
      more.hidden = !state.logsCursor;
      return;
    }
    res.data.logs.forEach(function (l) {
      if (!l || typeof l !== 'object') return;
      var tr = el('tr');
      if (l.id !== undefined && l.id !== null) tr.setAttribute('data-id', String(l.id));
      tr.appendChild(el('td', 'nowrap', fmtTime(l.timestamp)));
      var mtd = el('td', 'model-cell', modelLabel(l.model || ''));
      if (l.model) mtd.setAttribute('title', String(l.model));
      tr.appendChild(mtd);
      tr.appendChild(el('td', 'num', fmtInt(l.input_tokens)));
      tr.appendChild(el('td', 'num', fmtInt(l.output_tokens)));
      tr.appendChild(el('td', 'num cost', l.cost_usd === null || l.cost_usd === undefined ? 'unknown' : fmtUsd6(l.cost_usd)));
      var st = num(l.status);
      var std = el('td', 'num');
      var badge = el('span', 'badge ' + (st >= 200 && st < 300 ? 'badge-ok' : 'badge-err'),
        l.status === undefined || l.status === null ? '–' : String(l.status));
      if (l.error) badge.setAttribute('title', String(l.error));
      std.appendChild(badge);
      tr.appendChild(std);
      body.appendChild(tr);
      state.logsShown++;
    });
    var next = res.data.next_cursor;
    state.logsCursor = next === null || next === undefined || next === '' ? null : String(next);
    more.hidden = !state.logsCursor;
    note.className = 'muted small';
    if (!state.logsShown) note.textContent = 'No requests yet.';
    else note.textContent = state.logsShown + (state.logsShown === 1 ? ' request' : ' requests') +
      ' shown' + (state.logsCursor ? '' : ' (all)') + '.';
  }

  function loadMoreLogs() {
    if (!state.logsCursor) return Promise.resolve();
    var btn = $('logs-more');
    var seq = state.usageSeq;
    btn.disabled = true;
    btn.textContent = 'Loading…';
    return api('GET', '/api/usage/logs?limit=' + LOG_PAGE + '&cursor=' +
      encodeURIComponent(state.logsCursor)).then(function (res) {
      btn.disabled = false;
      btn.textContent = 'Load more';
      if (seq !== state.usageSeq) return;
      renderLogs(res, false);
    });
  }

  function renderTimeseries(res) {
    if (!(res.ok && res.data && Array.isArray(res.data.points))) {
      state.chartPoints = null;
      var box = $('chart');
      clear(box);
      box.appendChild(el('div', 'note-error small', 'Daily cost unavailable (' + errorText(res) + ').'));
      return;
    }
    var pts = res.data.points.filter(function (p) { return p && typeof p === 'object'; });
    // oldest first, whatever order they came in (when every start parses)
    if (pts.every(function (p) { return parseTime(p.start); })) {
      pts.sort(function (a, b) { return parseTime(a.start) - parseTime(b.start); });
    }
    state.chartPoints = pts;
    drawChart();
  }

  function drawChart() {
    var box = $('chart');
    clear(box);
    var pts = state.chartPoints;
    if (!pts) return;
    if (!pts.length) { box.appendChild(el('div', 'empty', 'No usage yet.')); return; }
    pts = pts.slice(-31);
    var W = Math.max(260, Math.floor(box.clientWidth || 560));
    var H = 190;
    var padL = 58, padR = 8, padT = 12, padB = 26;
    var plotW = W - padL - padR, plotH = H - padT - padB;
    var max = 0;
    pts.forEach(function (p) { max = Math.max(max, num(p.cost_usd) || 0); });
    var top = max > 0 ? max * 1.1 : 1;
    var root = svg('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, role: 'img',
      'class': 'chart-svg', 'aria-label': 'Daily cost, ' + pts.length + ' days' });

    [0, 0.5, 1].forEach(function (f) {
      var v = max > 0 ? max * f : 0;
      if (max === 0 && f > 0) return;
      var y = padT + plotH - (v / top) * plotH;
      root.appendChild(svg('line', { x1: padL, x2: W - padR, y1: y, y2: y, 'class': 'grid' }));
      var t = svg('text', { x: padL - 6, y: y + 4, 'text-anchor': 'end', 'class': 'axis' });
      t.textContent = fmtAxisUsd(v);
      root.appendChild(t);
    });

    var slot = plotW / pts.length;
    var bw = Math.max(2, Math.min(36, slot * 0.7));
    var labelEvery = Math.max(1, Math.ceil(pts.length / Math.max(1, Math.floor(plotW / 56))));
    pts.forEach(function (p, i) {
      var c = num(p.cost_usd) || 0;
      var h = c > 0 ? Math.max(1.5, (c / top) * plotH) : 0;
      var x = padL + slot * i + (slot - bw) / 2;
      var g = svg('g', { 'class': 'bar-group' });
      var tip = svg('title');
      tip.textContent = fmtDayLong(p.start) + ': ' + fmtUsd6(c) + ' · ' + fmtInt(p.requests) +
        ' requests · ' + fmtInt(p.tokens) + ' tokens';
      g.appendChild(tip);
      // a full-height hover target, then the bar itself
      g.appendChild(svg('rect', { x: padL + slot * i, y: padT, width: slot, height: plotH, 'class': 'hover' }));
      g.appendChild(svg('rect', { x: x, y: padT + plotH - h, width: bw, height: h, rx: Math.min(3, bw / 4), 'class': 'bar-rect' }));
      root.appendChild(g);
      if (i % labelEvery === 0 || (i === pts.length - 1 && pts.length <= 2)) {
        var t = svg('text', { x: padL + slot * i + slot / 2, y: H - 8, 'text-anchor': 'middle', 'class': 'axis' });
        t.textContent = fmtDay(p.start);
        root.appendChild(t);
      }
    });
    root.appendChild(svg('line', { x1: padL, x2: W - padR, y1: padT + plotH, y2: padT + plotH, 'class': 'baseline' }));
    box.appendChild(root);
  }

  function initUsage() {
    $('usage-refresh').addEventListener('click', function () { refreshUsage(); });
    $('logs-more').addEventListener('click', function () { loadMoreLogs(); });
    var t = null;
    var lastW = 0;
    window.addEventListener('resize', function () {
      if (t) clearTimeout(t);
      t = setTimeout(function () {
        var w = $('chart').clientWidth;
        if (w !== lastW) { lastW = w; drawChart(); }
      }, 150);
    });
  }

  // ------------------------------------------------------------------
  // deep link: #key=...&model=...&say=...&say=...

  function readDeepLink() {
    var h = window.location.hash;
    if (!h || h.length < 2) return null;
    var p;
    try { p = new URLSearchParams(h.slice(1)); } catch (e) { return null; }
    var link = { key: p.get('key'), model: p.get('model'), say: p.getAll('say') };
    if (link.key === null && link.model === null && !link.say.length) return null;
    // never leave a key in the address bar or the history
    try {
      window.history.replaceState(null, '', window.location.pathname + window.location.search);
    } catch (e) { /* ignore */ }
    return link;
  }

  function runDeepLink(link) {
    if (!link) return Promise.resolve();
    if (link.key !== null && link.key.trim()) {
      setKey(link.key);
      refreshUsage();
    }
    if (link.model && state.modelById[link.model]) {
      $('model-select').value = link.model;
      store(MODEL_STORAGE, link.model);
      renderModelInfo();
    } else if (link.model && state.models.length) {
      showModelsError('Unknown model ' + link.model + '; pick one from the list.');
    }
    return link.say.reduce(function (p, text) {
      return p.then(function () { return send(text); });
    }, Promise.resolve());
  }

  // ------------------------------------------------------------------

  function init() {
    document.body.setAttribute('data-ready', 'no');
    initKey();
    initChat();
    initUsage();
    var link = readDeepLink();
    if (link && link.key !== null && link.key.trim()) setKey(link.key);
    var modelsDone = loadModels(link && link.model);
    // usage after the models, so that model ids show as names
    modelsDone.then(function () { refreshUsage(); });
    modelsDone.then(function () {
      // key already applied above; only the model and messages remain
      return runDeepLink(link ? { key: null, model: link.model, say: link.say } : null);
    }).then(function () {
      document.body.setAttribute('data-ready', 'yes');
    });
    window.addEventListener('hashchange', function () {
      var l = readDeepLink();
      if (l) runDeepLink(l);
    });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
