// klaxon console. Every string shown here may come from an audit event or a rule, so it is
// attacker-controlled: the DOM is built with createElement and text nodes only, never with
// innerHTML or inline handlers (the Content-Security-Policy forbids inline script anyway).
'use strict';

(() => {
  const main = document.getElementById('main');
  const API = '../api/v1/';
  const SEVERITIES = ['debug', 'info', 'notice', 'warning', 'error', 'critical'];
  const OPS = ['=', '!=', '=~', '!~'];

  // ---- DOM helpers: text only ---------------------------------------------------------

  /** An element with attributes (`class`, `on: {event: fn}`, properties) and children. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'on') {
        for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
      } else if (key.startsWith('on')) throw new Error('event handlers go in `on`');
      else if (typeof value !== 'string') node[key] = value;
      else node.setAttribute(key, value);
    }
    add(node, children);
    return node;
  }

  /** Appends children: nodes as they are, anything else as text. */
  function add(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function badge(kind, value) {
    return el('span', { class: `badge ${kind}-${value}` }, value);
  }

  function table(headers, rows, attrs) {
    return el('table', attrs || {},
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', { class: h.num ? 'num' : '' }, h.label || h)))),
      el('tbody', {}, rows));
  }

  function num(value) {
    return el('td', { class: 'num' }, value === null || value === undefined ? '–' : value);
  }

  function kv(pairs) {
    return el('div', { class: 'kv' },
      pairs.filter(([, v]) => v !== undefined && v !== null && v !== '')
        .map(([k, v]) => [el('div', {}, k), el('div', {}, v)]));
  }

  function fieldsTable(map, cls) {
    const entries = Object.entries(map || {});
    if (!entries.length) return null;
    return table(['name', 'value'], entries.map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', {}, String(v)))),
      { class: `fields ${cls || ''}` });
  }

  function time(ms) {
    if (ms === null || ms === undefined) return '–';
    const date = new Date(ms);
    return Number.isNaN(date.getTime()) ? String(ms) : date.toISOString().replace('.000Z', 'Z');
  }

  function page(title, ...children) {
    main.replaceChildren(el('h1', {}, title));
    add(main, children);
  }

  function problem(message) {
    return el('div', { class: 'card error', role: 'alert' }, message);
  }

  // ---- API ------------------------------------------------------------------------------

  /** Calls the API; resolves to {status, ok, data} (data: the JSON answer, or null). */
  async function api(method, path, body) {
    const options = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
    if (body !== undefined) {
      options.headers['Content-Type'] = 'application/json';
      options.body = typeof body === 'string' ? body : JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(API + path, options);
    } catch (err) {
      return { status: 0, ok: false, data: { error: `cannot reach klaxon: ${err.message}` } };
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: text }; }
    return { status: response.status, ok: response.ok, data };
  }

  function failure(result, path) {
    const reason = result.data && result.data.error ? result.data.error : '';
    return problem(`${path}: ${result.status || 'no answer'} ${reason}`);
  }

  // ---- Alerts ---------------------------------------------------------------------------

  async function alertsPage() {
    const filters = {
      rule: el('input', { type: 'text', name: 'rule', placeholder: 'rule' }),
      severity: el('select', { name: 'severity' }, el('option', { value: '' }, 'any severity'),
        SEVERITIES.map((s) => el('option', { value: s }, `≥ ${s}`))),
      since: el('input', { type: 'text', name: 'since', value: '24h', size: 8 }),
      q: el('input', { type: 'text', name: 'q', placeholder: 'search title, text, fields' }),
    };
    const chart = el('div', { id: 'chart' });
    const list = el('div', { id: 'alert-list' });
    const details = el('div', { id: 'alert-details' });
    const form = el('form', { class: 'row', on: { submit: (e) => { e.preventDefault(); load(); } } },
      filters.rule, filters.severity, el('label', {}, 'since ', filters.since), filters.q,
      el('button', { type: 'submit', class: 'primary' }, 'Filter'));
    page('Alerts', form, el('h2', {}, 'Alerts per rule, last 24 hours'), chart, details, list);

    async function load() {
      const params = new URLSearchParams();
      for (const [name, input] of Object.entries(filters)) if (input.value) params.set(name, input.value);
      params.set('limit', '200');
      const path = `alerts?${params}`;
      const result = await api('GET', path);
      if (!result.ok) { list.replaceChildren(failure(result, path)); return; }
      showList(result.data.alerts || []);
    }

    function showList(alerts) {
      if (!alerts.length) { list.replaceChildren(el('p', { class: 'muted' }, 'No alerts match.')); return; }
      list.replaceChildren(table(['raised', 'severity', 'rule', 'title', 'object', 'user', 'outcome', 'targets'],
        alerts.map((a) => {
          const ev = a.event || {};
          return el('tr', { class: 'clickable', on: { click: () => showDetails(a) } },
            el('td', {}, a.raised_at), el('td', {}, badge('sev', a.severity)), el('td', {}, a.rule),
            el('td', {}, a.title), el('td', {}, [ev.namespace, ev.name].filter(Boolean).join('/')),
            el('td', {}, ev.user), el('td', {}, badge('out', a.outcome)), el('td', {}, (a.targets || []).join(', ')));
        })));
    }

    async function showDetails(alert) {
      const ev = alert.event || {};
      const delivery = el('div', {}, el('span', { class: 'muted' }, 'looking in the outbox…'));
      details.replaceChildren(el('div', { class: 'card', id: 'details' },
        el('div', { class: 'row' }, badge('sev', alert.severity), el('strong', {}, alert.title),
          badge('out', alert.outcome),
          el('button', { type: 'button', id: 'silence-like', on: { click: () => silenceLike(alert) } }, 'Silence alerts like this')),
        kv([['raised at', alert.raised_at], ['rule', alert.rule], ['silenced by', alert.silenced_by],
          ['duplicates', alert.duplicates || null], ['alerts in this entry', alert.count > 1 ? alert.count : null], ['targets', (alert.targets || []).join(', ')],
          ['dedup key', alert.dedup_key], ['ATT&CK', (alert.attack || []).join(', ')]]),
        alert.text ? el('pre', {}, alert.text) : null,
        el('h3', {}, 'Event'),
        kv([['auditID', ev.audit_id], ['verb', ev.verb],
          ['resource', [ev.resource, ev.subresource].filter(Boolean).join('/')],
          ['object', [ev.namespace, ev.name].filter(Boolean).join('/')], ['user', ev.user],
          ['source IPs', (ev.source_ips || []).join(', ')], ['cluster', ev.cluster], ['stage', ev.stage],
          ['code', ev.code]]),
        el('h3', {}, 'Fields'), fieldsTable(alert.fields) || el('p', { class: 'muted' }, 'none'),
        el('h3', {}, 'Labels'), fieldsTable(alert.labels) || el('p', { class: 'muted' }, 'none'),
        el('h3', {}, 'Delivery'), delivery));
      delivery.replaceChildren(await deliveryState(alert));
    }

    load();
    loadChart();

    async function loadChart() {
      const limit = 10000;
      const result = await api('GET', `alerts?since=24h&limit=${limit}`);
      if (!result.ok) { chart.replaceChildren(); return; }
      const counts = new Map();
      // An entry may stand for several duplicates of one incident (`count`).
      for (const a of result.data.alerts || []) counts.set(a.rule, (counts.get(a.rule) || 0) + (a.count || 1));
      const sorted = [...counts.entries()].sort((x, y) => y[1] - x[1]);
      if (!sorted.length) { chart.replaceChildren(el('p', { class: 'muted' }, 'No alerts in the last 24 hours.')); return; }
      const max = sorted[0][1];
      chart.replaceChildren(el('div', { class: 'card bars' }, sorted.map(([rule, n]) => {
        const bar = el('div', { class: 'bar' });
        bar.style.width = `${Math.max(1, (100 * n) / max)}%`;
        return [el('div', {}, rule), el('div', {}, bar), el('div', { class: 'num' }, n)];
      })));
      if ((result.data.alerts || []).length >= limit) {
        chart.append(el('p', { class: 'muted' }, `counted from the newest ${limit} history entries only`));
      }
    }
  }

  /** Where an alert of the history stands in the outbox: pending, dead, or gone. */
  async function deliveryState(alert) {
    const result = await api('GET', 'targets');
    if (!result.ok) return failure(result, '/api/v1/targets');
    const auditId = (alert.event || {}).audit_id;
    const same = (a) => a.rule === alert.rule && a.title === alert.title
      && (!auditId || (a.context || {}).audit_id === auditId);
    const pending = (result.data.pending || []).filter((e) => same(e.alert));
    const dead = (result.data.dead_letters || []).filter((d) => same(d.entry.alert));
    const lines = [
      ...pending.map((e) => `pending for ${e.target}: ${e.attempts} attempts${e.last_error ? `, last error: ${e.last_error}` : ''}`),
      ...dead.map((d) => `dead letter for ${d.entry.target}: ${d.reason}`),
    ];
    if (!lines.length) {
      const where = alert.outcome === 'admitted' ? 'delivered (nothing left in the outbox)' : `not queued (${alert.outcome})`;
      return el('p', {}, where);
    }
    return el('ul', {}, lines.map((l) => el('li', {}, l)));
  }

  function silenceLike(alert) {
    const params = new URLSearchParams();
    params.set('rule', alert.rule);
    const ns = (alert.event || {}).namespace;
    if (ns) params.set('namespace', ns);
    location.hash = `#silences?${params}`;
  }

  // ---- Silences -------------------------------------------------------------------------

  async function silencesPage(params) {
    const listing = el('div', { id: 'silence-list' });
    const status = el('div', { id: 'silence-status' });
    const matchers = el('div', { id: 'matchers' });
    const addMatcher = (name, op, value) => {
      const row = el('div', { class: 'row matcher' },
        el('input', { type: 'text', class: 'm-name', placeholder: 'name', value: name || '' }),
        el('select', { class: 'm-op' }, OPS.map((o) => el('option', { value: o, selected: o === (op || '=') }, o))),
        el('input', { type: 'text', class: 'm-value', placeholder: 'value', value: value || '' }));
      row.append(el('button', { type: 'button', on: { click: () => row.remove() } }, 'remove'));
      matchers.append(row);
    };
    for (const [name, value] of params) addMatcher(name, '=', value);
    if (!matchers.children.length) addMatcher();
    const duration = el('input', { type: 'text', name: 'duration', value: '2h', size: 6 });
    const endsAt = el('input', { type: 'text', name: 'ends_at', placeholder: '2026-12-03T20:00:00Z' });
    const createdBy = el('input', { type: 'text', name: 'created_by', placeholder: 'you' });
    const comment = el('input', { type: 'text', name: 'comment', placeholder: 'why (required)', size: 40 });
    const form = el('form', { class: 'card', id: 'silence-form', on: { submit: (e) => { e.preventDefault(); create(); } } },
      el('h2', {}, 'New silence'), matchers,
      el('button', { type: 'button', on: { click: () => addMatcher() } }, 'add matcher'),
      el('div', { class: 'row' }, el('label', {}, 'for ', duration), el('label', {}, 'or until ', endsAt),
        el('label', {}, 'by ', createdBy), el('label', {}, 'comment ', comment)),
      el('button', { type: 'submit', class: 'primary' }, 'Create silence'), status);
    page('Silences', form, el('h2', {}, 'Silences'), listing);

    async function create() {
      const body = {
        matchers: [...matchers.querySelectorAll('.matcher')].map((row) => ({
          name: row.querySelector('.m-name').value.trim(),
          op: row.querySelector('.m-op').value,
          value: row.querySelector('.m-value').value,
        })).filter((m) => m.name),
        comment: comment.value,
      };
      if (endsAt.value) body.ends_at = endsAt.value; else body.duration = duration.value;
      if (createdBy.value) body.created_by = createdBy.value;
      const result = await api('POST', 'silences', body);
      if (!result.ok) { status.replaceChildren(failure(result, 'POST /api/v1/silences')); return; }
      status.replaceChildren(el('p', {}, `Created ${result.data.id}.`));
      load();
    }

    async function expire(id) {
      if (!window.confirm(`Expire silence ${id}?`)) return;
      const result = await api('DELETE', `silences/${encodeURIComponent(id)}`);
      if (!result.ok) { status.replaceChildren(failure(result, 'DELETE /api/v1/silences')); return; }
      load();
    }

    async function load() {
      const result = await api('GET', 'silences');
      if (!result.ok) { listing.replaceChildren(failure(result, '/api/v1/silences')); return; }
      const silences = result.data.silences || [];
      if (!silences.length) { listing.replaceChildren(el('p', { class: 'muted' }, 'No silences.')); return; }
      listing.replaceChildren(table(['state', 'matchers', 'starts', 'ends', 'by', 'comment', 'id', ''],
        silences.map((s) => el('tr', {},
          el('td', {}, badge('state', s.state)),
          el('td', {}, (s.matchers || []).map((m) => `${m.name}${m.op}${m.value}`).join(', ')),
          el('td', {}, s.starts_at), el('td', {}, s.ends_at), el('td', {}, s.created_by),
          el('td', {}, s.comment), el('td', { class: 'muted' }, s.id),
          el('td', {}, s.state === 'expired' ? null
            : el('button', { type: 'button', class: 'danger', on: { click: () => expire(s.id) } }, 'Expire'))))));
    }
    load();
  }

  // ---- Targets --------------------------------------------------------------------------

  async function targetsPage() {
    const status = el('div', { id: 'targets-status' });
    const result = await api('GET', 'targets');
    if (!result.ok) { page('Targets', failure(result, '/api/v1/targets')); return; }
    const d = result.data;
    const overview = table(['target', 'kind', 'group wait', 'rate', { label: 'pending', num: true },
      { label: 'grouping', num: true }, { label: 'ready / paced', num: true }, { label: 'retrying', num: true },
      { label: 'dead letters', num: true }, 'oldest pending'],
    d.targets.map((t) => el('tr', {},
      el('td', {}, t.name, t.fallback_to ? el('div', { class: 'muted' }, `falls back to ${t.fallback_to}: ${t.fallback_reason}`) : null),
      el('td', {}, t.kind), el('td', {}, `${t.group_wait_secs}s`),
      el('td', {}, t.rate ? `${t.rate.per_second}/s, burst ${t.rate.burst}` : 'unpaced'),
      num(t.pending), num(t.grouping), num(t.ready), num(t.retrying), num(t.dead_letters),
      el('td', {}, t.oldest_pending_ms ? time(t.oldest_pending_ms) : '–'))), { id: 'targets-table' });

    const pending = d.pending.length
      ? table(['id', 'target', 'rule', 'title', { label: 'attempts', num: true }, 'stored', 'next attempt', 'last error'],
        d.pending.map((e) => el('tr', {}, el('td', {}, e.id), el('td', {}, e.target), el('td', {}, e.alert.rule),
          el('td', {}, e.alert.title), num(e.attempts), el('td', {}, time(e.enqueued_at_ms)),
          el('td', {}, time(e.next_attempt_ms)), el('td', {}, e.last_error))), { id: 'pending-table' })
      : el('p', { class: 'muted', id: 'pending-table' }, 'Nothing pending.');

    const retry = async (body) => {
      const r = await api('POST', 'dead-letters/retry', body);
      if (!r.ok) { status.replaceChildren(failure(r, 'retry')); return; }
      targetsPage();
    };
    const purge = async () => {
      if (!window.confirm(`Delete all ${d.dead_letters_total} dead letters? This cannot be undone.`)) return;
      const r = await api('POST', 'dead-letters/purge', {});
      if (!r.ok) { status.replaceChildren(failure(r, 'purge')); return; }
      targetsPage();
    };
    const dead = d.dead_letters.length
      ? [el('div', { class: 'row' },
        el('button', { type: 'button', id: 'retry-all', on: { click: () => retry({ all: true }) } }, 'Retry all'),
        el('button', { type: 'button', class: 'danger', id: 'purge', on: { click: purge } }, 'Purge dead letters')),
      table(['id', 'target', 'rule', 'title', 'reason', 'dead since', ''],
        d.dead_letters.map((l) => el('tr', {}, el('td', {}, l.entry.id), el('td', {}, l.entry.target),
          el('td', {}, l.entry.alert.rule), el('td', {}, l.entry.alert.title), el('td', {}, l.reason),
          el('td', {}, time(l.dead_at_ms)),
          el('td', {}, el('button', { type: 'button', class: 'retry', on: { click: () => retry({ ids: [l.entry.id] }) } }, 'Retry')))),
        { id: 'dead-table' })]
      : el('p', { class: 'muted', id: 'dead-table' }, 'No dead letters.');

    page('Targets', overview, status,
      el('h2', {}, `Pending (${d.pending_total})`), pending,
      el('h2', {}, `Dead letters (${d.dead_letters_total})`), dead);
  }

  // ---- Rules ----------------------------------------------------------------------------

  async function rulesPage() {
    const result = await api('GET', 'rules');
    if (!result.ok) { page('Rules', failure(result, '/api/v1/rules')); return; }
    const d = result.data;
    const last = d.last_reload;
    const reload = last
      ? el('div', { class: `card ${last.ok ? '' : 'error'}`, id: 'last-reload' },
        `Last reload ${time(last.at_ms)}: ${last.ok ? 'succeeded' : 'failed, the running rules stay'} (${last.rules} rules)`,
        (last.errors || []).length ? el('pre', {}, last.errors.join('\n')) : null)
      : el('div', { class: 'card muted', id: 'last-reload' },
        d.reload_enabled ? 'No reload since the start.' : 'Hot reload is not enabled for this server.');
    page('Rules', el('p', {}, `${d.rules.length} rules loaded.`), reload,
      table(['rule', 'level', 'ATT&CK', 'MATCH', { label: 'runs', num: true }, { label: 'alerts', num: true },
        { label: 'errors', num: true }, { label: 'µs per run', num: true }, 'last error'],
      d.rules.map((r) => el('tr', {},
        el('td', {}, r.name, el('div', { class: 'muted' }, r.path)), el('td', {}, r.level),
        el('td', {}, (r.attack || []).join(', ')), el('td', {}, r.indexed ? 'indexed' : 'every event'),
        num(r.runs), num(r.alerts), num(r.errors),
        num(r.mean_micros === null ? null : r.mean_micros.toFixed(1)),
        el('td', { class: r.last_error ? 'error' : '' }, r.last_error))), { id: 'rules-table' }));
  }

  // ---- Playground -----------------------------------------------------------------------

  async function playgroundPage() {
    const input = el('textarea', { id: 'event', spellcheck: 'false',
      placeholder: 'Paste an audit event: an Event, an EventList, a JSON array or JSON lines' });
    const examples = el('select', { id: 'example' }, el('option', { value: '' }, 'examples/events…'));
    const output = el('div', { id: 'result' });
    const run = el('button', { type: 'button', class: 'primary', id: 'run', on: { click: evaluate } }, 'Run the loaded rules');
    page('Playground',
      el('p', { class: 'muted' }, 'Runs the rules this server has loaded on the events, through the dry-run '
        + 'engine (the pipeline clocked by the events\' times, fresh dedup state): the alerts and the exact '
        + 'payload each target would receive. Nothing is stored or sent.'),
      el('div', { class: 'row' }, examples), input, el('div', { class: 'row' }, run), output);
    const list = await api('GET', 'playground/examples');
    const texts = new Map();
    for (const ex of (list.ok && list.data.examples) || []) {
      texts.set(ex.name, ex.text);
      examples.append(el('option', { value: ex.name }, ex.name));
    }
    examples.addEventListener('change', () => { if (texts.has(examples.value)) input.value = texts.get(examples.value); });

    async function evaluate() {
      output.replaceChildren(el('p', { class: 'muted' }, 'running…'));
      const result = await api('POST', 'playground', input.value);
      if (!result.ok) { output.replaceChildren(failure(result, 'playground')); return; }
      output.replaceChildren(...playgroundResult(result.data));
    }
  }

  function playgroundResult(d) {
    const parts = [el('p', { id: 'summary' },
      `${d.events} event${d.events === 1 ? '' : 's'}, ${d.alerts.length} alert${d.alerts.length === 1 ? '' : 's'}`
      + `${d.script_errors.length ? `, ${d.script_errors.length} script errors` : ''}`
      + `${d.rejected.length ? `, ${d.rejected.length} not decoded` : ''}.`)];
    if (d.rejected.length) parts.push(el('pre', { class: 'error' }, d.rejected.join('\n')));
    for (const e of d.script_errors) {
      parts.push(problem(`${e.location}: rule ${e.rule} failed on auditID ${e.audit_id}: ${e.message}`));
    }
    parts.push(el('h2', {}, 'Alerts'));
    if (!d.alerts.length) parts.push(el('p', { class: 'muted' }, 'No rule raised an alert.'));
    for (const { alert, outcome, destinations } of d.alerts) {
      parts.push(el('div', { class: 'card alert' },
        el('div', { class: 'row' }, badge('sev', alert.severity), el('strong', { class: 'alert-title' }, alert.title),
          badge('out', outcome)),
        kv([['rule', alert.rule], ['goes to', destinations.join(', ') || 'nowhere'],
          ['object', alert.context.object], ['user', alert.context.user], ['auditID', alert.context.audit_id],
          ['ATT&CK', (alert.attack || []).join(', ')]]),
        alert.text ? el('pre', { class: 'alert-text' }, alert.text) : null,
        fieldsTable(alert.fields, 'alert-fields')));
    }
    parts.push(el('h2', {}, 'Payloads'));
    for (const t of d.targets) {
      parts.push(el('div', { class: 'card target', 'data-target': t.name },
        el('h3', {}, `${t.name} (${t.kind})`),
        t.fallback_to ? el('p', { class: 'muted' }, `Not configured here: its alerts go to ${t.fallback_to}. `
          + 'Shown as it would receive them once configured.') : null,
        t.payloads.length ? t.payloads.map((p) => el('pre', { class: 'payload' }, p))
          : el('p', { class: 'muted' }, 'Receives nothing for these events.')));
    }
    return parts;
  }

  // ---- Routing --------------------------------------------------------------------------

  const pages = {
    alerts: alertsPage, silences: silencesPage, targets: targetsPage, rules: rulesPage, playground: playgroundPage,
  };

  function route() {
    const [name, query] = location.hash.slice(1).split('?');
    const current = pages[name] ? name : 'alerts';
    for (const link of document.querySelectorAll('nav a')) {
      link.classList.toggle('active', link.dataset.page === current);
    }
    main.replaceChildren(el('p', { class: 'muted' }, 'loading…'));
    pages[current](new URLSearchParams(query || ''));
  }

  window.addEventListener('hashchange', route);
  route();
})();
