// The "Try it" panel: fires requests at /continents and shows what the rate
// limiter answered. Plain DOM calls, no framework, no build step; text goes in
// with textContent only.
'use strict';
(() => {
	const $ = (id) => document.getElementById(id);
	const SVG = 'http://www.w3.org/2000/svg';
	const SPAN = 60; // seconds the chart shows
	const REASONS = {200: 'OK', 401: 'Unauthorized', 404: 'Not Found', 429: 'Too Many Requests', 503: 'Service Unavailable'};

	const events = []; // {t: ms, ok: bool}, for the chart
	let deadline = 0; // ms since the epoch when the countdown ends; 0: nothing to count
	let retrying = false; // the countdown is a Retry-After, not a reset
	let seq = 0;
	let busy = false;

	// Basic credentials are sent only as this header, built here: with
	// credentials 'omit' the browser adds none of its own and shows no dialog.
	function authorization() {
		const user = $('user').value, password = $('password').value;
		if (user === '' && password === '') return null;
		let bin = '';
		for (const b of new TextEncoder().encode(user + ':' + password)) bin += String.fromCharCode(b);
		return 'Basic ' + btoa(bin);
	}

	// resetSeconds is how long until the quota is fully back. The draft
	// RateLimit header says it relative to now ("t=42"), immune to a browser
	// clock that differs from the server's; X-RateLimit-Reset (Unix seconds)
	// is the fallback.
	function resetSeconds(h) {
		const t = /;\s*t=(\d+)/.exec(h.get('RateLimit') || '');
		if (t) return Number(t[1]);
		const at = Number(h.get('X-RateLimit-Reset'));
		if (at > 0) return Math.max(0, Math.round(at - Date.now() / 1000));
		return null;
	}

	async function send() {
		const headers = {Accept: 'application/json'};
		const auth = authorization();
		if (auth) headers.Authorization = auth;
		const r = {n: ++seq, at: new Date(), who: auth ? $('user').value : 'anonymous', status: 0, remaining: null, wait: null};
		try {
			const res = await fetch('/continents', {headers, credentials: 'omit', cache: 'no-store'});
			await res.text();
			r.status = res.status;
			r.remaining = res.headers.get('X-RateLimit-Remaining');
			const retry = Number(res.headers.get('Retry-After'));
			const reset = resetSeconds(res.headers);
			if (res.status === 429 && retry > 0) {
				deadline = Date.now() + retry * 1000;
				retrying = true;
				r.wait = 'retry in ' + retry + ' s';
			} else if (reset !== null) {
				deadline = Date.now() + reset * 1000;
				retrying = false;
				r.wait = 'reset in ' + reset + ' s';
			}
		} catch (e) {
			r.error = String(e);
		}
		events.push({t: Date.now(), ok: r.status >= 200 && r.status < 300});
		addRow(r);
		tick();
		return r;
	}

	function addRow(r) {
		const tr = document.createElement('tr');
		tr.dataset.status = String(r.status);
		const status = r.status ? r.status + ' ' + (REASONS[r.status] || '') : 'network error';
		const cells = [r.n, r.at.toTimeString().slice(0, 8), r.who, status.trim(), r.remaining ?? '–', r.wait ?? '–'];
		cells.forEach((text, i) => {
			const td = document.createElement('td');
			td.textContent = String(text);
			if (i === 3) td.className = r.status >= 200 && r.status < 300 ? 'ok' : 'denied';
			if (i === 4) td.className = 'remaining';
			tr.appendChild(td);
		});
		$('results').tBodies[0].appendChild(tr);
	}

	// summarize says what a batch of responses got, for the live region.
	function summarize(what, rs) {
		const counts = new Map();
		for (const r of rs) counts.set(r.status, (counts.get(r.status) || 0) + 1);
		const parts = [...counts].map(([s, n]) => n + ' × ' + (s ? s + ' ' + (REASONS[s] || '') : 'network error').trim());
		const last = rs[rs.length - 1];
		let text = what + ' as ' + last.who + ': ' + parts.join(', ') + '.';
		if (last.remaining !== null) text += ' ' + last.remaining + ' remaining.';
		$('summary').textContent = text;
	}

	async function run(n) {
		if (busy) return;
		busy = true;
		$('results').setAttribute('aria-busy', 'true');
		const rs = [];
		try {
			// One after another, as fast as the server answers: the table shows
			// them in the order the limiter saw them.
			for (let i = 0; i < n; i++) rs.push(await send());
		} finally {
			busy = false;
			$('results').removeAttribute('aria-busy');
		}
		summarize(n === 1 ? 'Request ' + rs[0].n : 'Burst of ' + n, rs);
	}

	function tick() {
		const label = $('reset-label'), out = $('countdown');
		if (deadline === 0) {
			label.textContent = 'Quota resets in';
			out.textContent = '–';
		} else {
			const secs = Math.ceil((deadline - Date.now()) / 1000);
			if (secs > 0) {
				label.textContent = retrying ? 'Retry allowed in' : 'Full quota back in';
				out.textContent = secs + ' s';
			} else {
				label.textContent = retrying ? 'Retry allowed' : 'Full quota back';
				out.textContent = 'now';
			}
		}
		draw();
	}

	// draw plots allowed (bottom) and denied (top) per second, newest right.
	function draw() {
		const svg = $('chart');
		const W = 600, H = 160, left = 32, right = 8, top = 10, bottom = 24;
		const now = Date.now();
		const allowed = new Array(SPAN).fill(0), denied = new Array(SPAN).fill(0);
		for (const e of events) {
			const age = Math.floor((now - e.t) / 1000);
			if (age < 0 || age >= SPAN) continue;
			(e.ok ? allowed : denied)[SPAN - 1 - age]++;
		}
		let max = 5;
		for (let i = 0; i < SPAN; i++) max = Math.max(max, allowed[i] + denied[i]);
		const plotH = H - top - bottom, barW = (W - left - right) / SPAN;
		const y = (v) => top + plotH - (v / max) * plotH;

		while (svg.lastChild && svg.lastChild.nodeName !== 'title') svg.removeChild(svg.lastChild);
		const el = (name, attrs, text) => {
			const n = document.createElementNS(SVG, name);
			for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
			if (text !== undefined) n.textContent = text;
			svg.appendChild(n);
		};
		el('line', {class: 'axis', x1: left, x2: W - right, y1: y(0), y2: y(0)});
		el('line', {class: 'axis', x1: left, x2: W - right, y1: y(max), y2: y(max)});
		el('text', {x: left - 6, y: y(max) + 4, 'text-anchor': 'end'}, String(max));
		el('text', {x: left - 6, y: y(0) + 4, 'text-anchor': 'end'}, '0');
		el('text', {x: left, y: H - 6}, '60 s ago');
		el('text', {x: W - right, y: H - 6, 'text-anchor': 'end'}, 'now');
		for (let i = 0; i < SPAN; i++) {
			const x = left + i * barW + 1, w = barW - 2;
			if (allowed[i]) el('rect', {class: 'allowed', x, width: w, y: y(allowed[i]), height: y(0) - y(allowed[i])});
			if (denied[i]) {
				const base = allowed[i] + denied[i];
				el('rect', {class: 'denied', x, width: w, y: y(base), height: y(allowed[i]) - y(base)});
			}
		}
		const a = allowed.reduce((s, v) => s + v, 0), d = denied.reduce((s, v) => s + v, 0);
		$('chart-title').textContent = 'Last 60 seconds: ' + a + ' allowed, ' + d + ' denied';
	}

	function clear() {
		events.length = 0;
		seq = 0;
		deadline = 0;
		$('results').tBodies[0].replaceChildren();
		$('summary').textContent = 'No requests yet.';
		tick();
	}

	$('creds').addEventListener('submit', (e) => {
		e.preventDefault();
		run(1);
	});
	$('burst').addEventListener('click', () => run(10));
	$('clear').addEventListener('click', clear);
	$('try').hidden = false;
	tick();
	setInterval(tick, 250);
})();
