// Files of a running capsule: folder listings and whole-file reads (as bytes).
import { request, requestBytes, seg, type RequestOptions } from './client';
import type { Reply } from './types';

type Opts = Pick<RequestOptions, 'signal' | 'timeoutMs'>;

export const list = (capsuleId: string, path: string, o: Opts = {}) =>
	request<Reply<'listDir'>>('POST', `/v1/capsules/${seg(capsuleId)}/files/list`, { ...o, body: { path, depth: 1 } });

/** The file's bytes (streamed by the API, so any size and any content). */
export const read = (capsuleId: string, path: string, o: Opts = {}) =>
	requestBytes('POST', `/v1/capsules/${seg(capsuleId)}/files/stream/read`, { ...o, body: { path } });
