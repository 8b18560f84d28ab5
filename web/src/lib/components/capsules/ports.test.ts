import { describe, expect, it } from 'vitest';
import { openInNewTab, reach } from './ports';

describe('reach', () => {
	it('names every address, loopback only, or the address itself', () => {
		expect(reach('0.0.0.0')).toBe('every address');
		expect(reach('::')).toBe('every address');
		expect(reach('127.0.0.1')).toBe('loopback only');
		expect(reach('127.0.1.1')).toBe('loopback only');
		expect(reach('::1')).toBe('loopback only');
		expect(reach('10.0.0.2')).toBe('10.0.0.2');
	});
});

describe('openInNewTab', () => {
	it('opens a new tab cut off from this one', () => {
		const tab = { opener: window } as unknown as Window;
		const opened: [string, string][] = [];
		const ok = openInNewTab('http://8000-sb-1.example.com/?t=x', (url, target) => {
			opened.push([url, target]);
			return tab;
		});
		expect(ok).toBe(true);
		expect(opened).toEqual([['http://8000-sb-1.example.com/?t=x', '_blank']]);
		expect(tab.opener).toBeNull();
	});

	it('says so when the browser blocks the tab', () => {
		expect(openInNewTab('http://8000-sb-1.example.com/', () => null)).toBe(false);
	});
});
