// The listening ports of a capsule as the Ports panel shows and opens them.

/** Who can reach a port from inside the capsule (the port proxy reaches every one of them). */
export function reach(address: string): string {
	if (address === '0.0.0.0' || address === '::') return 'every address';
	if (address === '::1' || address.startsWith('127.')) return 'loopback only';
	return address;
}

export type OpenWindow = (url: string, target: string) => Window | null;

/** Opens `url` in a new tab that cannot reach back to this one (a capsule's page is not ours to
 * trust). False when the browser blocked it: the caller shows the link instead. */
export function openInNewTab(url: string, open: OpenWindow = (u, t) => window.open(u, t)): boolean {
	const tab = open(url, '_blank');
	if (!tab) return false;
	tab.opener = null;
	return true;
}
