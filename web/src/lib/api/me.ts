// The signed-in account: who it is, its password, its linked OAuth providers, finding others.
import { request, seg, type RequestOptions } from './client';
import type { Input, Reply } from './types';

type Opts = Pick<RequestOptions, 'signal' | 'timeoutMs'>;

export const get = (o: Opts = {}) => request<Reply<'getMe'>>('GET', '/v1/me', o);

/** A 401 here means the current password is wrong: the session stays. */
export const changePassword = (body: Input<'changePassword'>, o: Opts = {}) =>
	request<null>('POST', '/v1/me/password', { ...o, body, keepSession: true });

export const connectProvider = (provider: string, o: Opts = {}) =>
	request<Reply<'connectProvider'>>('GET', `/v1/me/providers/${seg(provider)}/connect`, o);

export const disconnectProvider = (provider: string, o: Opts = {}) =>
	request<null>('DELETE', `/v1/me/providers/${seg(provider)}`, o);

export const searchUsers = (email: string, o: Opts = {}) =>
	request<Reply<'searchUsers'>>('GET', '/v1/users/search', { ...o, query: { email } });
