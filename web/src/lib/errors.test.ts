import { afterEach, describe, expect, it, vi } from 'vitest';
import { ApiError } from './api/client';
import { actionFailed, isAborted, messageOf, refreshes } from './errors.svelte';
import { toast } from './toast.svelte';

const down = () => new ApiError(0, 'network', 'The control plane cannot be reached.');
const aborted = () => new ApiError(0, 'aborted', 'The request was cancelled.');

afterEach(() => {
	for (const t of toast.items) toast.dismiss(t.id);
	vi.useRealTimers();
});

describe('refreshes', () => {
	it('shows one notice however many pollers fail, however often', () => {
		const a = Symbol('a');
		const b = Symbol('b');
		for (let i = 0; i < 5; i++) {
			refreshes.failed(a, down());
			refreshes.failed(b, down());
		}
		expect(refreshes.notice).toBe('The control plane cannot be reached. Retrying…');
		refreshes.succeeded(a);
		expect(refreshes.notice).not.toBe(''); // b still fails
		refreshes.succeeded(b);
		expect(refreshes.notice).toBe('');
	});

	it('ignores a cancelled refresh', () => {
		refreshes.failed(Symbol('c'), aborted());
		expect(refreshes.notice).toBe('');
	});
});

describe('actionFailed', () => {
	it('toasts the failure once, even when repeated', () => {
		actionFailed(new ApiError(409, 'conflict', 'It is in use.'));
		actionFailed(new ApiError(409, 'conflict', 'It is in use.'));
		expect(toast.items.map((t) => [t.kind, t.text])).toEqual([['error', 'It is in use.']]);
	});

	it('says nothing about a cancelled request', () => {
		actionFailed(aborted());
		expect(toast.items).toEqual([]);
	});

	it('dismisses the toast after a while', () => {
		vi.useFakeTimers();
		actionFailed(new Error('Boom.'));
		vi.advanceTimersByTime(7999);
		expect(toast.items).toHaveLength(1);
		vi.advanceTimersByTime(1);
		expect(toast.items).toHaveLength(0);
	});
});

describe('messageOf / isAborted', () => {
	it('reads errors and anything else thrown', () => {
		expect(messageOf(new Error('x'))).toBe('x');
		expect(messageOf('plain')).toBe('plain');
		expect(isAborted(aborted())).toBe(true);
		expect(isAborted(down())).toBe(false);
		expect(isAborted(new DOMException('', 'AbortError'))).toBe(false);
	});
});
