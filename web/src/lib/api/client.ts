// The REST API, from the browser. Every call sends the session's JWT; errors come back as the
// API's `{"error": {"code", "message"}}` body and are thrown as ApiError. A 401 ends the session
// (except from `checkPassword`, where it means a wrong password, not a dead session).
import { goto } from '$app/navigation';
import { session } from './session.svelte.js';

export class ApiError extends Error {
	constructor(status, code, message, details = {}) {
		super(message);
		this.status = status;
		this.code = code;
		this.details = details;
	}
}

async function request(method, path, { body, query, form, raw, keepSession } = {}) {
	let url = path;
	if (query) {
		const params = new URLSearchParams();
		for (const [k, v] of Object.entries(query)) {
			if (v === undefined || v === null || v === '') continue;
			for (const item of Array.isArray(v) ? v : [v]) params.append(k, String(item));
		}
		const text = params.toString();
		if (text) url += `?${text}`;
	}
	const headers = {};
	if (session.token) headers.Authorization = `Bearer ${session.token}`;
	let payload;
	if (form) {
		payload = form;
	} else if (body !== undefined) {
		headers['Content-Type'] = 'application/json';
		payload = JSON.stringify(body);
	}
	let resp;
	try {
		resp = await fetch(url, { method, headers, body: payload });
	} catch {
		throw new ApiError(0, 'network', 'The control plane cannot be reached.');
	}
	if (resp.status === 401 && session.token && !keepSession) {
		session.clear();
		goto('/login');
	}
	if (!resp.ok) {
		let code = 'error';
		let message = `Request failed (${resp.status})`;
		let details = {};
		try {
			const data = await resp.json();
			({ code, message, ...details } = data.error ?? {});
		} catch {
			/* not JSON */
		}
		throw new ApiError(resp.status, code, message, details);
	}
	if (raw) return resp;
	if (resp.status === 204) return null;
	return resp.json();
}

export const api = {
	get: (path, query) => request('GET', path, { query }),
	post: (path, body, query) => request('POST', path, { body, query }),
	put: (path, body) => request('PUT', path, { body }),
	patch: (path, body) => request('PATCH', path, { body }),
	del: (path, query) => request('DELETE', path, { query }),
	upload: (path, form) => request('POST', path, { form }),
	raw: (method, path, body) => request(method, path, { body, raw: true }),
	/** A POST whose 401 says a password was wrong: the session stays. */
	checkPassword: (path, body) => request('POST', path, { body, keepSession: true })
};
