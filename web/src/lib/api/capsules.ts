// Capsules of the current team: list, one, create, pause/resume/destroy, metrics and stats, ports.
import { request, seg, type RequestOptions } from './client';
import type { Input, QueryOf, Reply } from './types';

type Opts = Pick<RequestOptions, 'signal' | 'timeoutMs'>;

/** Without `status` the API leaves stopped and errored capsules out (as the Go system does). */
export const list = ({ status, ...o }: Opts & { status?: readonly string[] } = {}) =>
	request<Reply<'listCapsules'>>('GET', '/v1/capsules', { ...o, query: { status: status?.join(',') } });

export const get = (id: string, o: Opts = {}) => request<Reply<'getCapsule'>>('GET', `/v1/capsules/${seg(id)}`, o);

export const create = (body: Input<'createCapsule'>, o: Opts = {}) =>
	request<Reply<'createCapsule'>>('POST', '/v1/capsules', { ...o, body });

export const pause = (id: string, o: Opts = {}) =>
	request<Reply<'pauseCapsule'>>('POST', `/v1/capsules/${seg(id)}/pause`, o);

export const resume = (id: string, o: Opts = {}) =>
	request<Reply<'resumeCapsule'>>('POST', `/v1/capsules/${seg(id)}/resume`, o);

export const destroy = (id: string, o: Opts = {}) => request<null>('DELETE', `/v1/capsules/${seg(id)}`, o);

export const metrics = (id: string, range: QueryOf<'getCapsuleMetrics'>['range'], o: Opts = {}) =>
	request<Reply<'getCapsuleMetrics'>>('GET', `/v1/capsules/${seg(id)}/metrics`, { ...o, query: { range } });

export const stats = (range: QueryOf<'getCapsuleStats'>['range'], o: Opts = {}) =>
	request<Reply<'getCapsuleStats'>>('GET', '/v1/capsules/stats', { ...o, query: { range } });

export const ports = (id: string, o: Opts = {}) =>
	request<Reply<'listCapsulePorts'>>('GET', `/v1/capsules/${seg(id)}/ports`, o);

/** A short-lived link that opens one port of the capsule in a browser. */
export const portUrl = (id: string, port: number, o: Opts = {}) =>
	request<Reply<'createPortURL'>>('POST', `/v1/capsules/${seg(id)}/ports/${port}/url`, o);
