// Hosts: platform hosts (admins) and a team's BYOC hosts, their tokens, tags and deletion.
import { request, seg, type RequestOptions } from './client';
import type { Input, Reply } from './types';

type Opts = Pick<RequestOptions, 'signal' | 'timeoutMs'>;

export const list = (o: Opts = {}) => request<Reply<'listHosts'>>('GET', '/v1/hosts', o);

export const create = (body: Input<'createHost'>, o: Opts = {}) =>
	request<Reply<'createHost'>>('POST', '/v1/hosts', { ...o, body });

export const regenerateToken = (id: string, o: Opts = {}) =>
	request<Reply<'regenerateHostToken'>>('POST', `/v1/hosts/${seg(id)}/token`, o);

export const addTag = (id: string, tag: string, o: Opts = {}) =>
	request<Reply<'addHostTag'>>('POST', `/v1/hosts/${seg(id)}/tags`, { ...o, body: { tag } });

export const removeTag = (id: string, tag: string, o: Opts = {}) =>
	request<null>('DELETE', `/v1/hosts/${seg(id)}/tags/${seg(tag)}`, o);

export const deletePreview = (id: string, o: Opts = {}) =>
	request<Reply<'getHostDeletePreview'>>('GET', `/v1/hosts/${seg(id)}/delete-preview`, o);

/** `force` also destroys the capsules still on the host. */
export const remove = (id: string, force: boolean, o: Opts = {}) =>
	request<null>('DELETE', `/v1/hosts/${seg(id)}`, { ...o, query: force ? { force: 'true' } : undefined });
