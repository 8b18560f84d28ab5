// A terminal session on a capsule's PTY, apart from how it is drawn. It starts a shell, or
// reattaches to the one this browser tab had: the shell outlives the socket, and its tag is kept
// in sessionStorage per capsule, so after a dropped connection, a reload or a visit elsewhere in
// the dashboard the same shell comes back with its recent output (which the server replays).
// A socket that drops is reopened a few times on its own; after that the user is asked.
import {
	connectFrame,
	inputFrame,
	killFrame,
	openPty,
	parseFrame,
	pongFrame,
	resizeFrame,
	startFrame,
	type Size
} from '$lib/api/pty';

export type TerminalState =
	| { kind: 'connecting' }
	| { kind: 'open'; tag: string }
	| { kind: 'reconnecting'; attempt: number }
	| { kind: 'lost' }
	| { kind: 'ended'; exitCode: number }
	| { kind: 'failed'; message: string };

export interface TerminalView {
	/** Terminal output to draw. */
	write(data: Uint8Array): void;
	/** Clear the screen: a reattached shell's recent output is about to be replayed. */
	reset(): void;
	size(): Size;
	state(state: TerminalState): void;
	/** A refused message (the session goes on). */
	notice(message: string): void;
}

export interface Options {
	open?: (capsuleId: string, first: string) => WebSocket;
	storage?: Storage;
	/** Waits before each automatic reconnect; then the user reconnects by hand. */
	retryDelaysMs?: number[];
}

export const RETRY_DELAYS_MS = [500, 1000, 2000, 4000];
const OPEN = 1;

const keyOf = (capsuleId: string) => `wrenn.pty.${capsuleId}`;

export class TerminalSession {
	private ws: WebSocket | null = null;
	private started = false;
	private attempt = 0;
	private timer: ReturnType<typeof setTimeout> | undefined;
	private readonly open: (capsuleId: string, first: string) => WebSocket;
	private readonly storage: Storage;
	private readonly delays: number[];

	constructor(
		private readonly capsuleId: string,
		private readonly view: TerminalView,
		options: Options = {}
	) {
		this.open = options.open ?? openPty;
		this.storage = options.storage ?? sessionStorage;
		this.delays = options.retryDelaysMs ?? RETRY_DELAYS_MS;
	}

	/** The tag of this tab's shell on the capsule, if it has one. */
	get tag(): string | null {
		return this.storage.getItem(keyOf(this.capsuleId));
	}

	/** Reattach to this tab's shell, or start one. */
	connect(): void {
		this.attempt = 0;
		this.socket(this.tag);
	}

	/** End this tab's shell (if any) and start a fresh one. */
	newSession(): void {
		if (this.ws?.readyState === OPEN && this.started) this.ws.send(killFrame());
		this.storage.removeItem(keyOf(this.capsuleId));
		this.attempt = 0;
		this.view.reset();
		this.socket(null);
	}

	/** Typed or pasted text, to the shell's stdin. */
	input(text: string): void {
		if (this.ws?.readyState === OPEN && this.started) this.ws.send(inputFrame(text));
	}

	/** Raw bytes (one per character, as xterm.js reports some mouse events), to stdin. */
	inputBinary(data: string): void {
		const bytes = Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff);
		if (this.ws?.readyState === OPEN && this.started) this.ws.send(bytes);
	}

	resize(size: Size): void {
		if (this.ws?.readyState === OPEN && this.started) this.ws.send(resizeFrame(size));
	}

	/** Leave (the page or the tab): the shell goes on running for a later reattach. */
	dispose(): void {
		clearTimeout(this.timer);
		this.drop();
	}

	private drop(): void {
		const ws = this.ws;
		this.ws = null;
		this.started = false;
		if (ws) {
			ws.onmessage = ws.onclose = null;
			ws.close();
		}
	}

	/** `gone`: the tag whose reattach was refused, put back if a fresh start is refused too (the
	 * capsule is paused, say: its shell may well be there again once it runs). */
	private socket(tag: string | null, gone: string | null = null): void {
		clearTimeout(this.timer);
		this.drop();
		this.view.state({ kind: 'connecting' });
		const ws = this.open(this.capsuleId, tag ? connectFrame(tag) : startFrame(this.view.size()));
		this.ws = ws;
		let done = false; // an exit or a fatal error was told: the close that follows is expected
		ws.onmessage = (ev: MessageEvent) => {
			const frame = parseFrame(ev.data);
			if (!frame) return;
			switch (frame.type) {
				case 'started':
					this.started = true;
					this.attempt = 0;
					this.storage.setItem(keyOf(this.capsuleId), frame.tag);
					if (tag) {
						// Reattached: the replay redraws the screen, at this terminal's size.
						this.view.reset();
						ws.send(resizeFrame(this.view.size()));
					}
					this.view.state({ kind: 'open', tag: frame.tag });
					break;
				case 'output':
					this.view.write(frame.data);
					break;
				case 'ping':
					ws.send(pongFrame());
					break;
				case 'exit':
					done = true;
					this.storage.removeItem(keyOf(this.capsuleId));
					this.drop();
					this.view.state({ kind: 'ended', exitCode: frame.exitCode });
					break;
				case 'error':
					if (!frame.fatal) {
						this.view.notice(frame.message);
					} else if (tag && !this.started) {
						// The shell to reattach to is gone (or cannot be reached): start a fresh one;
						// if that fails too, its error is the one shown.
						done = true;
						this.storage.removeItem(keyOf(this.capsuleId));
						this.socket(null, tag);
					} else {
						done = true;
						if (gone) this.storage.setItem(keyOf(this.capsuleId), gone);
						this.drop();
						this.view.state({ kind: 'failed', message: frame.message });
					}
					break;
			}
		};
		ws.onclose = () => {
			if (done || this.ws !== ws) return;
			this.ws = null;
			this.started = false;
			if (this.attempt >= this.delays.length) {
				this.view.state({ kind: 'lost' });
				return;
			}
			const delay = this.delays[this.attempt++];
			this.view.state({ kind: 'reconnecting', attempt: this.attempt });
			this.timer = setTimeout(() => this.socket(this.tag), delay);
		};
	}
}
