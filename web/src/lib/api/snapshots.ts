// Templates a team can start capsules from (the API calls them snapshots).
import { request, seg, type RequestOptions } from './client';
import type { Reply } from './types';

type Opts = Pick<RequestOptions, 'signal' | 'timeoutMs'>;

export const list = (o: Opts = {}) => request<Reply<'listSnapshots'>>('GET', '/v1/snapshots', o);

export const remove = (name: string, o: Opts = {}) => request<null>('DELETE', `/v1/snapshots/${seg(name)}`, o);
