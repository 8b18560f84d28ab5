import { describe, expect, it } from 'vitest';
import { authFrame, connectFrame, inputFrame, parseFrame, ptyUrl, resizeFrame, startFrame } from './pty';

describe('ptyUrl', () => {
	it('is on the page origin, wss under https, with the id escaped', () => {
		expect(ptyUrl('cl-1', { protocol: 'http:', host: 'wrenn.test:8080' })).toBe(
			'ws://wrenn.test:8080/v1/capsules/cl-1/pty'
		);
		expect(ptyUrl('a/b', { protocol: 'https:', host: 'wrenn.test' })).toBe('wss://wrenn.test/v1/capsules/a%2Fb/pty');
	});
});

describe('client frames', () => {
	it('are the messages the server and the SDK speak', () => {
		expect(JSON.parse(authFrame('tok'))).toEqual({ type: 'auth', token: 'tok' });
		expect(JSON.parse(startFrame({ cols: 120, rows: 30 }))).toEqual({
			type: 'start',
			cmd: '/bin/bash',
			cols: 120,
			rows: 30
		});
		expect(JSON.parse(connectFrame('pty-1a2b'))).toEqual({ type: 'connect', tag: 'pty-1a2b' });
		expect(JSON.parse(resizeFrame({ cols: 90, rows: 20 }))).toEqual({ type: 'resize', cols: 90, rows: 20 });
	});

	it('sends typed text as its UTF-8 bytes', () => {
		expect(Array.from(inputFrame('é\r'))).toEqual([0xc3, 0xa9, 0x0d]);
	});
});

describe('parseFrame', () => {
	it('reads binary frames as output', () => {
		const bytes = new Uint8Array([104, 105]);
		expect(parseFrame(bytes.buffer)).toEqual({ type: 'output', data: bytes });
	});

	it('reads the control messages', () => {
		expect(parseFrame('{"type":"started","tag":"pty-1","pid":7}')).toEqual({ type: 'started', tag: 'pty-1', pid: 7 });
		expect(parseFrame('{"type":"exit","exit_code":3}')).toEqual({ type: 'exit', exitCode: 3 });
		expect(parseFrame('{"type":"exit"}')).toEqual({ type: 'exit', exitCode: -1 });
		expect(parseFrame('{"type":"error","data":"capsule is paused","fatal":true}')).toEqual({
			type: 'error',
			message: 'capsule is paused',
			fatal: true
		});
		expect(parseFrame('{"type":"error","data":"bad resize"}')).toEqual({
			type: 'error',
			message: 'bad resize',
			fatal: false
		});
		expect(parseFrame('{"type":"ping"}')).toEqual({ type: 'ping' });
	});

	it('ignores what it does not know', () => {
		expect(parseFrame('{"type":"later"}')).toBeNull();
		expect(parseFrame('not json')).toBeNull();
		expect(parseFrame('null')).toBeNull();
	});
});
