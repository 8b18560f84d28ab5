// The REST API, from the browser. Every call sends the session's JWT; errors come back as the
// API's `{"error": {"code", "message"}}` body and are thrown as ApiError. A 401 ends the session
// (except with `keepSession`, where it means a wrong password, not a dead session).
//
// Every request has a deadline (DEFAULT_TIMEOUT_MS unless given) and can be cancelled: by the
// caller's `signal`, and by leaving the page (`leavePage`, called on navigation, aborts every
// request the page started). A timed-out or cancelled request rejects like any other failure,
// so `finally` blocks run: no busy flag stays set and no poll stops waiting.
import { session } from '../session.svelte';

export const DEFAULT_TIMEOUT_MS = 30_000;

export class ApiError extends Error {
	readonly status: number;
	readonly code: string;
	readonly details: Record<string, unknown>;

	constructor(status: number, code: string, message: string, details: Record<string, unknown> = {}) {
		super(message);
		this.name = 'ApiError';
		this.status = status;
		this.code = code;
		this.details = details;
	}

	/** Cancelled on purpose (the page was left, or the caller aborted): nobody needs to hear. */
	get aborted(): boolean {
		return this.code === 'aborted';
	}

	/** The control plane could not be reached or did not answer in time. */
	get unreachable(): boolean {
		return this.code === 'network' || this.code === 'timeout';
	}
}

export type Query = Record<string, string | number | boolean | null | undefined | (string | number)[]>;

export interface RequestOptions {
	body?: unknown;
	query?: Query;
	form?: FormData;
	/** A 401 says a password was wrong: the session stays. */
	keepSession?: boolean;
	signal?: AbortSignal;
	timeoutMs?: number;
}

let onUnauthorized: () => void = () => {};
let page = new AbortController();

/** What a 401 on a signed-in call does (the app sends the user to the login page). */
export function configure(options: { onUnauthorized: () => void }): void {
	onUnauthorized = options.onUnauthorized;
}

/** Cancels every request started so far (the page is being left); later ones start fresh. */
export function leavePage(): void {
	page.abort();
	page = new AbortController();
}

function urlOf(path: string, query?: Query): string {
	if (!query) return path;
	const params = new URLSearchParams();
	for (const [k, v] of Object.entries(query)) {
		if (v === undefined || v === null || v === '') continue;
		for (const item of Array.isArray(v) ? v : [v]) params.append(k, String(item));
	}
	const text = params.toString();
	return text ? `${path}?${text}` : path;
}

async function errorOf(resp: Response): Promise<ApiError> {
	let code = 'error';
	let message = `Request failed (${resp.status})`;
	let details: Record<string, unknown> = {};
	try {
		const data = (await resp.json()) as { error?: { code?: string; message?: string } };
		if (data.error) {
			const { code: c, message: m, ...rest } = data.error;
			code = c ?? code;
			message = m ?? message;
			details = rest;
		}
	} catch {
		/* not JSON */
	}
	return new ApiError(resp.status, code, message, details);
}

/** Runs `use` on the response of one request, under the request's deadline and signals. */
async function send<T>(
	method: string,
	path: string,
	options: RequestOptions,
	use: (resp: Response) => Promise<T>
): Promise<T> {
	const { body, query, form, keepSession, signal, timeoutMs = DEFAULT_TIMEOUT_MS } = options;
	const headers: Record<string, string> = {};
	if (session.token) headers.Authorization = `Bearer ${session.token}`;
	let payload: BodyInit | undefined;
	if (form) {
		payload = form;
	} else if (body !== undefined) {
		headers['Content-Type'] = 'application/json';
		payload = JSON.stringify(body);
	}
	const controller = new AbortController();
	let timedOut = false;
	const timer = setTimeout(() => {
		timedOut = true;
		controller.abort();
	}, timeoutMs);
	const cancel = () => controller.abort();
	const signals = [page.signal, signal].filter((s): s is AbortSignal => !!s);
	for (const s of signals) {
		if (s.aborted) cancel();
		else s.addEventListener('abort', cancel, { once: true });
	}
	try {
		let resp: Response;
		try {
			resp = await fetch(urlOf(path, query), { method, headers, body: payload, signal: controller.signal });
		} catch {
			throw failure(timedOut, controller.signal.aborted);
		}
		if (resp.status === 401 && session.token && !keepSession) {
			session.clear();
			onUnauthorized();
		}
		if (!resp.ok) throw await errorOf(resp);
		try {
			return await use(resp);
		} catch (e) {
			if (controller.signal.aborted) throw failure(timedOut, true);
			throw e;
		}
	} finally {
		clearTimeout(timer);
		for (const s of signals) s.removeEventListener('abort', cancel);
	}
}

function failure(timedOut: boolean, aborted: boolean): ApiError {
	if (timedOut) return new ApiError(0, 'timeout', 'The control plane did not answer in time.');
	if (aborted) return new ApiError(0, 'aborted', 'The request was cancelled.');
	return new ApiError(0, 'network', 'The control plane cannot be reached.');
}

/** A call answered with JSON (or 204: null). */
export function request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
	return send(method, path, options, async (resp) => (resp.status === 204 ? null : await resp.json()) as T);
}

/** A call answered with bytes: the whole body is read under the same deadline. */
export function requestBytes(method: string, path: string, options: RequestOptions = {}): Promise<Blob> {
	return send(method, path, options, (resp) => resp.blob());
}

/** One path segment, escaped. */
export const seg = (value: string | number): string => encodeURIComponent(String(value));
