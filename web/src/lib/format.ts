// How numbers and times read on the dashboard.
type Maybe<T> = T | null | undefined;

/** A byte count in binary units: "512 B", "1.5 KB", "12 MB". */
export function bytes(n: Maybe<number>): string {
	if (n === null || n === undefined) return '—';
	const units = ['B', 'KB', 'MB', 'GB', 'TB'];
	let i = 0;
	let v = Number(n);
	while (v >= 1024 && i < units.length - 1) {
		v /= 1024;
		i++;
	}
	return `${v < 10 && i ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** A timestamp in the browser's locale. */
export function when(iso: Maybe<string>): string {
	if (!iso) return '—';
	return new Date(iso).toLocaleString();
}

/** How long ago a timestamp was: "5s ago", "3m ago", "2h ago", "4d ago". */
export function ago(iso: Maybe<string>, now: number = Date.now()): string {
	if (!iso) return '—';
	const s = Math.round((now - new Date(iso).getTime()) / 1000);
	if (s < 60) return `${Math.max(s, 0)}s ago`;
	if (s < 3600) return `${Math.round(s / 60)}m ago`;
	if (s < 86400) return `${Math.round(s / 3600)}h ago`;
	return `${Math.round(s / 86400)}d ago`;
}
