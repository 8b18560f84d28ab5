import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ApiError } from './api/client';
import { refreshes } from './errors.svelte';
import { poll } from './poll';

let stops: (() => void)[] = [];
const start = (fn: (signal: AbortSignal) => unknown, ms: number) => {
	const stop = poll(fn, ms);
	stops.push(stop);
	return stop;
};

function setHidden(hidden: boolean) {
	Object.defineProperty(document, 'hidden', { configurable: true, get: () => hidden });
	document.dispatchEvent(new Event('visibilitychange'));
}

beforeEach(() => vi.useFakeTimers());
afterEach(() => {
	for (const stop of stops) stop();
	stops = [];
	setHidden(false);
	vi.useRealTimers();
});

describe('poll', () => {
	it('runs now and then every interval, one run at a time', async () => {
		let runs = 0;
		start(async () => {
			runs++;
			await new Promise((r) => setTimeout(r, 300)); // a slow answer
		}, 1000);
		expect(runs).toBe(1);
		await vi.advanceTimersByTimeAsync(1299);
		expect(runs).toBe(1); // the next run waits for the interval after the slow one
		await vi.advanceTimersByTimeAsync(1);
		expect(runs).toBe(2);
	});

	it('keeps polling after a run fails or times out, with one notice, cleared on success', async () => {
		const results: (ApiError | null)[] = [
			new ApiError(0, 'timeout', 'The control plane did not answer in time.'),
			new ApiError(0, 'network', 'The control plane cannot be reached.'),
			null
		];
		let runs = 0;
		start(async () => {
			const r = results[runs++];
			if (r) throw r;
		}, 1000);
		await vi.advanceTimersByTimeAsync(0);
		expect(refreshes.notice).toContain('did not answer in time');
		await vi.advanceTimersByTimeAsync(1000);
		expect(runs).toBe(2);
		expect(refreshes.notice).toContain('cannot be reached');
		await vi.advanceTimersByTimeAsync(1000);
		expect(runs).toBe(3);
		expect(refreshes.notice).toBe('');
	});

	it('pauses while the tab is hidden and catches up when it is shown', async () => {
		let runs = 0;
		start(() => runs++, 1000);
		await vi.advanceTimersByTimeAsync(0);
		setHidden(true);
		await vi.advanceTimersByTimeAsync(5000);
		expect(runs).toBe(1); // the run due at 1 s found the tab hidden and did nothing
		setHidden(false);
		expect(runs).toBe(2);
		await vi.advanceTimersByTimeAsync(1000);
		expect(runs).toBe(3);
	});

	it('stops for good, and cancels the run under way', async () => {
		let signal: AbortSignal | undefined;
		let runs = 0;
		const stop = start((s) => {
			runs++;
			signal = s;
			return new Promise(() => {}); // never answers
		}, 1000);
		stop();
		expect(signal?.aborted).toBe(true);
		await vi.advanceTimersByTimeAsync(10_000);
		expect(runs).toBe(1);
	});

	it("takes a stopped poller's failure off the notice", async () => {
		const stop = start(() => {
			throw new ApiError(503, 'unavailable', 'Down for maintenance.');
		}, 1000);
		await vi.advanceTimersByTimeAsync(0);
		expect(refreshes.notice).toContain('Down for maintenance.');
		stop();
		expect(refreshes.notice).toBe('');
	});
});
