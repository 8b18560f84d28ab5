// The signed-in account: who it is, its password, its linked OAuth providers, finding others.
import { request, seg, type RequestOptions } from './client';
import type { Input, Reply } from './types';

type Opts = Pick<RequestOptions, 'signal' | 'timeoutMs'>;

export const get = (o: Opts = {}) => request<Reply<'getMe'>>('GET', '/v1/me', o);

/** A new session carrying the new name (older tokens stay valid). */
export const rename = (name: string, o: Opts = {}) =>
	request<Reply<'updateMe'>>('PATCH', '/v1/me', { ...o, body: { name } });

/** `confirmation` is the account's email; 409 owns_team_with_members while others depend on it. */
export const deleteAccount = (confirmation: string, o: Opts = {}) =>
	request<null>('DELETE', '/v1/me', { ...o, body: { confirmation } });

/** A 401 here means the current password is wrong: the session stays. */
export const changePassword = (body: Input<'changePassword'>, o: Opts = {}) =>
	request<null>('POST', '/v1/me/password', { ...o, body, keepSession: true });

export const connectProvider = (provider: string, o: Opts = {}) =>
	request<Reply<'connectProvider'>>('GET', `/v1/me/providers/${seg(provider)}/connect`, o);

export const disconnectProvider = (provider: string, o: Opts = {}) =>
	request<null>('DELETE', `/v1/me/providers/${seg(provider)}`, o);

export const searchUsers = (email: string, o: Opts = {}) =>
	request<Reply<'searchUsers'>>('GET', '/v1/users/search', { ...o, query: { email } });
