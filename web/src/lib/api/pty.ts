// The interactive terminal (PTY) WebSocket of a running capsule, `/v1/capsules/{id}/pty`, and
// its messages as the control plane (and the published SDK) speak them. Keystrokes go as binary
// frames and the terminal's output comes back as binary frames; everything else is JSON text.
// A browser cannot set headers on a WebSocket, so the session's token is the first message
// (never part of the URL, which proxies and logs keep).
import { session } from '../session.svelte';
import { seg } from './client';

export interface Size {
	cols: number;
	rows: number;
}

export type ServerFrame =
	| { type: 'started'; tag: string; pid: number }
	| { type: 'output'; data: Uint8Array }
	| { type: 'exit'; exitCode: number }
	| { type: 'error'; message: string; fatal: boolean }
	| { type: 'ping' };

/** The shell a new terminal runs (the capsule's default user, in its home). */
export const SHELL = '/bin/bash';

/** The socket's address, on the dashboard's own origin (ws:, or wss: under https). */
export function ptyUrl(capsuleId: string, origin: { protocol: string; host: string } = location): string {
	const scheme = origin.protocol === 'https:' ? 'wss:' : 'ws:';
	return `${scheme}//${origin.host}/v1/capsules/${seg(capsuleId)}/pty`;
}

export const authFrame = (token: string): string => JSON.stringify({ type: 'auth', token });

export const startFrame = (size: Size, cmd: string = SHELL): string =>
	JSON.stringify({ type: 'start', cmd, cols: size.cols, rows: size.rows });

export const connectFrame = (tag: string): string => JSON.stringify({ type: 'connect', tag });

export const resizeFrame = (size: Size): string => JSON.stringify({ type: 'resize', cols: size.cols, rows: size.rows });

export const killFrame = (): string => JSON.stringify({ type: 'kill' });

export const pongFrame = (): string => JSON.stringify({ type: 'pong' });

const encoder = new TextEncoder();

/** What was typed or pasted, as the bytes the terminal's stdin gets. */
export const inputFrame = (text: string): Uint8Array => encoder.encode(text);

/** One message from the server; null for one this client does not know (ignored). */
export function parseFrame(data: string | ArrayBuffer | Uint8Array): ServerFrame | null {
	if (typeof data !== 'string') {
		const bytes = ArrayBuffer.isView(data)
			? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
			: new Uint8Array(data);
		return { type: 'output', data: bytes };
	}
	let msg: Record<string, unknown>;
	try {
		msg = JSON.parse(data);
	} catch {
		return null;
	}
	if (!msg || typeof msg !== 'object') return null;
	switch (msg.type) {
		case 'started':
			return { type: 'started', tag: String(msg.tag ?? ''), pid: Number(msg.pid ?? 0) };
		case 'exit':
			return { type: 'exit', exitCode: typeof msg.exit_code === 'number' ? msg.exit_code : -1 };
		case 'error':
			return { type: 'error', message: String(msg.data ?? 'error'), fatal: msg.fatal === true };
		case 'ping':
			return { type: 'ping' };
		default:
			return null;
	}
}

/** Opens the socket; once open it authenticates with the signed-in session's token and sends
 * `first` (a start or connect frame). */
export function openPty(capsuleId: string, first: string): WebSocket {
	const ws = new WebSocket(ptyUrl(capsuleId));
	ws.binaryType = 'arraybuffer';
	ws.addEventListener(
		'open',
		() => {
			ws.send(authFrame(session.token ?? ''));
			ws.send(first);
		},
		{ once: true }
	);
	return ws;
}
