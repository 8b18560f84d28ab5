import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Size } from '$lib/api/pty';
import { TerminalSession, type TerminalState, type TerminalView } from './terminal';

/** A socket the test drives: what the page sends, and the server's side by hand. */
class FakeSocket {
	readyState = 1;
	sent: unknown[] = [];
	closed = false;
	onmessage: ((ev: { data: unknown }) => void) | null = null;
	onclose: (() => void) | null = null;
	constructor(readonly first: string) {}
	send(data: string | Uint8Array) {
		this.sent.push(typeof data === 'string' ? JSON.parse(data) : new TextDecoder().decode(data));
	}
	close() {
		this.closed = true;
		this.readyState = 3;
	}
	server(msg: object | Uint8Array) {
		// (jsdom's TextEncoder makes arrays of another realm: no instanceof)
		this.onmessage?.({ data: ArrayBuffer.isView(msg) ? msg.buffer : JSON.stringify(msg) });
	}
	drop() {
		this.readyState = 3;
		this.onclose?.();
	}
}

class View implements TerminalView {
	out = '';
	resets = 0;
	states: TerminalState[] = [];
	notices: string[] = [];
	current: Size = { cols: 100, rows: 30 };
	write(data: Uint8Array) {
		this.out += new TextDecoder().decode(data);
	}
	reset() {
		this.resets++;
		this.out = '';
	}
	size() {
		return this.current;
	}
	state(s: TerminalState) {
		this.states.push(s);
	}
	notice(m: string) {
		this.notices.push(m);
	}
	get last() {
		return this.states[this.states.length - 1];
	}
}

let sockets: FakeSocket[];
let view: View;
const open = (_id: string, first: string) => {
	const s = new FakeSocket(first);
	sockets.push(s);
	return s as unknown as WebSocket;
};
const session = () => new TerminalSession('cl-1', view, { open, storage: sessionStorage, retryDelaysMs: [100, 200] });

beforeEach(() => {
	sockets = [];
	view = new View();
	sessionStorage.clear();
	vi.useFakeTimers();
});
afterEach(() => vi.useRealTimers());

describe('TerminalSession', () => {
	it('starts a shell at the terminal size and keeps its tag for this capsule', () => {
		const s = session();
		s.connect();
		expect(JSON.parse(sockets[0].first)).toEqual({ type: 'start', cmd: '/bin/bash', cols: 100, rows: 30 });
		s.input('ls\r'); // nothing is sent before the shell has started
		expect(sockets[0].sent).toEqual([]);
		sockets[0].server({ type: 'started', tag: 'pty-1', pid: 5 });
		expect(view.last).toEqual({ kind: 'open', tag: 'pty-1' });
		expect(sessionStorage.getItem('wrenn.pty.cl-1')).toBe('pty-1');
		s.input('ls\r');
		s.resize({ cols: 80, rows: 10 });
		sockets[0].server({ type: 'ping' });
		sockets[0].server(new TextEncoder().encode('hello'));
		expect(sockets[0].sent).toEqual(['ls\r', { type: 'resize', cols: 80, rows: 10 }, { type: 'pong' }]);
		expect(view.out).toBe('hello');
		expect(view.resets).toBe(0);
	});

	it('reattaches by tag: the screen is cleared for the replay and the size sent', () => {
		sessionStorage.setItem('wrenn.pty.cl-1', 'pty-9');
		session().connect();
		expect(JSON.parse(sockets[0].first)).toEqual({ type: 'connect', tag: 'pty-9' });
		sockets[0].server({ type: 'started', tag: 'pty-9', pid: 5 });
		expect(view.resets).toBe(1);
		expect(sockets[0].sent).toEqual([{ type: 'resize', cols: 100, rows: 30 }]);
	});

	it('reconnects to the same shell after a dropped socket, then asks', () => {
		session().connect();
		sockets[0].server({ type: 'started', tag: 'pty-1', pid: 5 });
		sockets[0].drop();
		expect(view.last).toEqual({ kind: 'reconnecting', attempt: 1 });
		vi.advanceTimersByTime(100);
		expect(JSON.parse(sockets[1].first)).toEqual({ type: 'connect', tag: 'pty-1' });
		sockets[1].drop();
		vi.advanceTimersByTime(200);
		sockets[2].drop();
		expect(view.last).toEqual({ kind: 'lost' });
		vi.advanceTimersByTime(10_000);
		expect(sockets).toHaveLength(3);
	});

	it('a shell that exits is over: its tag is forgotten, no reconnect', () => {
		session().connect();
		sockets[0].server({ type: 'started', tag: 'pty-1', pid: 5 });
		sockets[0].server({ type: 'exit', exit_code: 0 });
		sockets[0].drop();
		vi.advanceTimersByTime(10_000);
		expect(view.last).toEqual({ kind: 'ended', exitCode: 0 });
		expect(sessionStorage.getItem('wrenn.pty.cl-1')).toBeNull();
		expect(sockets).toHaveLength(1);
	});

	it('starts a fresh shell when the one to reattach to is gone', () => {
		sessionStorage.setItem('wrenn.pty.cl-1', 'pty-old');
		session().connect();
		sockets[0].server({ type: 'error', data: 'PTY session not found', fatal: true });
		expect(JSON.parse(sockets[1].first)).toMatchObject({ type: 'start' });
		expect(sessionStorage.getItem('wrenn.pty.cl-1')).toBeNull();
	});

	it('keeps the tag when neither a reattach nor a fresh start is allowed (a paused capsule)', () => {
		sessionStorage.setItem('wrenn.pty.cl-1', 'pty-9');
		session().connect();
		sockets[0].server({ type: 'error', data: 'capsule cl-1 is paused', fatal: true });
		sockets[1].server({ type: 'error', data: 'capsule cl-1 is paused', fatal: true });
		expect(view.last).toEqual({ kind: 'failed', message: 'capsule cl-1 is paused' });
		expect(sessionStorage.getItem('wrenn.pty.cl-1')).toBe('pty-9');
		expect(sockets).toHaveLength(2);
	});

	it('sends raw bytes as they are', () => {
		const s = session();
		s.connect();
		sockets[0].server({ type: 'started', tag: 'pty-1', pid: 5 });
		const sent: Uint8Array[] = [];
		(sockets[0] as unknown as { send: (d: Uint8Array) => void }).send = (d) => sent.push(d);
		s.inputBinary('\x1b[M \xff!');
		expect(Array.from(sent[0])).toEqual([0x1b, 0x5b, 0x4d, 0x20, 0xff, 0x21]);
	});

	it('says why a shell cannot start, and does not retry', () => {
		session().connect();
		sockets[0].server({ type: 'error', data: 'capsule cl-1 is paused', fatal: true });
		sockets[0].drop();
		vi.advanceTimersByTime(10_000);
		expect(view.last).toEqual({ kind: 'failed', message: 'capsule cl-1 is paused' });
		expect(sockets).toHaveLength(1);
	});

	it('a refused message is a notice; the session goes on', () => {
		session().connect();
		sockets[0].server({ type: 'started', tag: 'pty-1', pid: 5 });
		sockets[0].server({ type: 'error', data: 'bad resize', fatal: false });
		expect(view.notices).toEqual(['bad resize']);
		expect(view.last).toEqual({ kind: 'open', tag: 'pty-1' });
	});

	it('a new session ends the old shell and starts another', () => {
		const s = session();
		s.connect();
		sockets[0].server({ type: 'started', tag: 'pty-1', pid: 5 });
		s.newSession();
		expect(sockets[0].sent).toEqual([{ type: 'kill' }]);
		expect(sockets[0].closed).toBe(true);
		expect(JSON.parse(sockets[1].first)).toMatchObject({ type: 'start' });
	});

	it('leaving keeps the shell (and its tag) for later', () => {
		const s = session();
		s.connect();
		sockets[0].server({ type: 'started', tag: 'pty-1', pid: 5 });
		s.dispose();
		expect(sockets[0].closed).toBe(true);
		expect(sockets[0].sent).toEqual([]);
		vi.advanceTimersByTime(10_000);
		expect(sockets).toHaveLength(1);
		expect(sessionStorage.getItem('wrenn.pty.cl-1')).toBe('pty-1');
	});
});
