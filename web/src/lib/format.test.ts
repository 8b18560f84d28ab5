import { describe, expect, it } from 'vitest';
import { ago, bytes, when } from './format';

describe('bytes', () => {
	it('uses binary units, one decimal below ten', () => {
		expect(bytes(0)).toBe('0 B');
		expect(bytes(1023)).toBe('1023 B');
		expect(bytes(1024)).toBe('1.0 KB');
		expect(bytes(1536)).toBe('1.5 KB');
		expect(bytes(12 * 1024 * 1024)).toBe('12 MB');
		expect(bytes(5 * 1024 ** 5)).toBe('5120 TB');
	});

	it('shows a dash for a missing value', () => {
		expect(bytes(null)).toBe('—');
		expect(bytes(undefined)).toBe('—');
	});
});

describe('ago', () => {
	const now = Date.parse('2026-01-02T00:00:00Z');
	const before = (s: number) => new Date(now - s * 1000).toISOString();

	it('picks the largest unit that fits', () => {
		expect(ago(before(5), now)).toBe('5s ago');
		expect(ago(before(90), now)).toBe('2m ago');
		expect(ago(before(2 * 3600), now)).toBe('2h ago');
		expect(ago(before(3 * 86400), now)).toBe('3d ago');
	});

	it('never says a time in the future is ahead', () => {
		expect(ago(before(-30), now)).toBe('0s ago');
	});

	it('shows a dash for a missing time', () => {
		expect(ago(null, now)).toBe('—');
		expect(when('')).toBe('—');
	});
});
