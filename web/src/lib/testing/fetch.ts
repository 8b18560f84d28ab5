// A stand-in for the browser's fetch in unit tests: each call is recorded and answered by the
// test's handler, which may also never answer (a hung request) until the request is aborted.
import { vi } from 'vitest';

export interface Call {
	method: string;
	url: string;
	body: unknown;
	headers: Record<string, string>;
	signal: AbortSignal | undefined;
}

export type Handler = (call: Call) => Response | Promise<Response> | 'hang';

export function json(data: unknown, status = 200): Response {
	return new Response(status === 204 ? null : JSON.stringify(data), {
		status,
		headers: { 'Content-Type': 'application/json' }
	});
}

export function apiError(status: number, code: string, message: string): Response {
	return json({ error: { code, message } }, status);
}

/** Installs a fetch answering with `handler`; returns the calls made. */
export function fakeFetch(handler: Handler): Call[] {
	const calls: Call[] = [];
	vi.stubGlobal('fetch', (url: string, init: RequestInit = {}) => {
		const call: Call = {
			method: init.method ?? 'GET',
			url,
			body: typeof init.body === 'string' ? JSON.parse(init.body) : init.body,
			headers: (init.headers ?? {}) as Record<string, string>,
			signal: init.signal ?? undefined
		};
		calls.push(call);
		return new Promise<Response>((resolve, reject) => {
			const abort = () => reject(new DOMException('The operation was aborted.', 'AbortError'));
			if (call.signal?.aborted) return abort();
			call.signal?.addEventListener('abort', abort);
			Promise.resolve(handler(call)).then((r) => {
				if (r !== 'hang') resolve(r);
			}, reject);
		});
	});
	return calls;
}
