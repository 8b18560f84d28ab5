import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { session } from '../session.svelte';
import { apiError, fakeFetch, json } from '../testing/fetch';
import { ApiError, DEFAULT_TIMEOUT_MS, configure, leavePage, request, requestBytes } from './client';

// A JWT whose claims the session can read (the signature is not checked in the browser).
const token = `x.${btoa(JSON.stringify({ sub: 'u1', email: 'a@b.c', exp: 4e9 }))}.y`;

beforeEach(() => session.clear());
afterEach(() => {
	vi.useRealTimers();
	vi.unstubAllGlobals();
});

/** The rejection of `promise`, which must reject. */
async function failure(promise: Promise<unknown>): Promise<ApiError> {
	const e = await promise.then(
		() => {
			throw new Error('the request succeeded');
		},
		(e: unknown) => e
	);
	expect(e).toBeInstanceOf(ApiError);
	return e as ApiError;
}

describe('request', () => {
	it('sends JSON with the session token and the query, and returns the reply', async () => {
		session.set(token);
		const calls = fakeFetch(() => json({ ok: 1 }));
		const reply = await request('POST', '/v1/x', { body: { a: 1 }, query: { q: 'a b', tag: ['t1', 't2'], no: '' } });
		expect(reply).toEqual({ ok: 1 });
		expect(calls[0].url).toBe('/v1/x?q=a+b&tag=t1&tag=t2');
		expect(calls[0].body).toEqual({ a: 1 });
		expect(calls[0].headers.Authorization).toBe(`Bearer ${token}`);
	});

	it('returns null for 204', async () => {
		fakeFetch(() => json(null, 204));
		expect(await request('DELETE', '/v1/x')).toBeNull();
	});

	it("throws the API's error body as ApiError", async () => {
		fakeFetch(() => apiError(409, 'conflict', 'It is in use.'));
		const e = await failure(request('GET', '/v1/x'));
		expect([e.status, e.code, e.message]).toEqual([409, 'conflict', 'It is in use.']);
	});

	it('says the control plane is unreachable when fetch fails', async () => {
		vi.stubGlobal('fetch', () => Promise.reject(new TypeError('Failed to fetch')));
		const e = await failure(request('GET', '/v1/x'));
		expect(e.code).toBe('network');
		expect(e.unreachable).toBe(true);
	});

	it('gives up on a hung request at the deadline', async () => {
		vi.useFakeTimers();
		const calls = fakeFetch(() => 'hang');
		const pending = failure(request('GET', '/v1/x'));
		await vi.advanceTimersByTimeAsync(DEFAULT_TIMEOUT_MS - 1);
		expect(calls[0].signal?.aborted).toBe(false);
		await vi.advanceTimersByTimeAsync(1);
		const e = await pending;
		expect(e.code).toBe('timeout');
		expect(e.unreachable).toBe(true);
		expect(calls[0].signal?.aborted).toBe(true);
	});

	it('takes its own deadline', async () => {
		vi.useFakeTimers();
		fakeFetch(() => 'hang');
		const pending = failure(request('GET', '/v1/x', { timeoutMs: 100 }));
		await vi.advanceTimersByTimeAsync(100);
		expect((await pending).code).toBe('timeout');
	});

	it('also times out a body that stops arriving', async () => {
		vi.useFakeTimers();
		// Headers came, the body never does; as in a browser, aborting the request errors the body.
		fakeFetch((call) => {
			const stalled = new ReadableStream({
				start: (c) => call.signal?.addEventListener('abort', () => c.error(new DOMException('', 'AbortError')))
			});
			return new Response(stalled, { status: 200 });
		});
		const pending = failure(requestBytes('POST', '/v1/x', { timeoutMs: 100 }));
		await vi.advanceTimersByTimeAsync(100);
		expect((await pending).code).toBe('timeout');
	});

	it("is cancelled by the caller's signal, as an aborted error", async () => {
		const calls = fakeFetch(() => 'hang');
		const controller = new AbortController();
		const pending = failure(request('GET', '/v1/x', { signal: controller.signal }));
		controller.abort();
		const e = await pending;
		expect(e.aborted).toBe(true);
		expect(calls[0].signal?.aborted).toBe(true);
	});

	it('is cancelled when the page is left; later requests are not', async () => {
		fakeFetch((call) => (call.url === '/v1/old' ? 'hang' : json({ fresh: true })));
		const old = failure(request('GET', '/v1/old'));
		leavePage();
		expect((await old).aborted).toBe(true);
		expect(await request('GET', '/v1/new')).toEqual({ fresh: true });
	});

	it('ends the session on a 401, unless told the 401 means a wrong password', async () => {
		const unauthorized = vi.fn();
		configure({ onUnauthorized: unauthorized });
		fakeFetch(() => apiError(401, 'unauthorized', 'Wrong password.'));

		session.set(token);
		await failure(request('POST', '/v1/me/password', { keepSession: true }));
		expect(session.token).toBe(token);
		expect(unauthorized).not.toHaveBeenCalled();

		await failure(request('GET', '/v1/teams'));
		expect(session.token).toBeNull();
		expect(unauthorized).toHaveBeenCalledOnce();
	});
});
