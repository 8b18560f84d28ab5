// API keys of the current team.
import { request, seg, type RequestOptions } from './client';
import type { Reply } from './types';

type Opts = Pick<RequestOptions, 'signal' | 'timeoutMs'>;

export const list = (o: Opts = {}) => request<Reply<'listAPIKeys'>>('GET', '/v1/api-keys', o);

export const create = (name: string, o: Opts = {}) =>
	request<Reply<'createAPIKey'>>('POST', '/v1/api-keys', { ...o, body: { name } });

export const revoke = (id: string, o: Opts = {}) => request<null>('DELETE', `/v1/api-keys/${seg(id)}`, o);
