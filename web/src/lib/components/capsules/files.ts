// File helpers of the capsule file browser.
import * as filesApi from '$lib/api/files';

export const MAX_PREVIEW_BYTES = 10 * 1024 * 1024;
export const MAX_PREVIEW_LINES = 5000;
const DOWNLOAD_TIMEOUT_MS = 30 * 60_000;

export function parentOf(path: string): string {
	const parts = path.split('/').filter(Boolean);
	parts.pop();
	return '/' + parts.join('/');
}

export function joinPath(dir: string, name: string): string {
	return dir.endsWith('/') ? dir + name : `${dir}/${name}`;
}

/** An absolute path without empty, `.` or `..` parts (a relative one is taken from the root). */
export function normalize(path: string): string {
	const parts: string[] = [];
	for (const part of path.split('/')) {
		if (part === '..') parts.pop();
		else if (part && part !== '.') parts.push(part);
	}
	return '/' + parts.join('/');
}

/** [{name, path}] from the root to `path`. */
export function crumbs(path: string): { name: string; path: string }[] {
	const out = [{ name: '/', path: '/' }];
	let acc = '';
	for (const part of path.split('/').filter(Boolean)) {
		acc += `/${part}`;
		out.push({ name: part, path: acc });
	}
	return out;
}

export async function readBytes(capsuleId: string, path: string, signal?: AbortSignal): Promise<Uint8Array> {
	const blob = await filesApi.read(capsuleId, path, { signal });
	return new Uint8Array(await blob.arrayBuffer());
}

/** Text if `data` looks like text (no NUL bytes, valid UTF-8), else null. */
export function asText(data: Uint8Array): string | null {
	if (data.subarray(0, 8192).includes(0)) return null;
	try {
		return new TextDecoder('utf-8', { fatal: true }).decode(data);
	} catch {
		return null;
	}
}

/** Save a capsule file through the browser. */
export async function download(capsuleId: string, path: string): Promise<void> {
	// A large file may take a while: the deadline is for a stalled download, not a slow one.
	const blob = await filesApi.read(capsuleId, path, { timeoutMs: DOWNLOAD_TIMEOUT_MS });
	const url = URL.createObjectURL(blob);
	const a = document.createElement('a');
	a.href = url;
	a.download = path.split('/').pop() || 'download';
	document.body.appendChild(a);
	a.click();
	a.remove();
	// Revoked later: the browser needs the URL while the download starts.
	setTimeout(() => URL.revokeObjectURL(url), 5000);
}
