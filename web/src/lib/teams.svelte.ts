// The user's teams and the active one, fresh from the API (is_byoc and roles are read from
// there, not from the JWT). `refresh()` after anything that changes them.
import { api } from './api.js';
import { session } from './session.svelte.js';

class Teams {
	list = $state([]);
	loaded = $state(false);

	get current() {
		return this.list.find((t) => t.id === session.user?.team_id) ?? null;
	}

	async refresh() {
		this.list = await api.get('/v1/teams');
		this.loaded = true;
	}

	async switchTo(teamId) {
		const resp = await api.post('/v1/auth/switch-team', { team_id: teamId });
		session.set(resp.token, { is_admin: session.user?.is_admin });
		await this.refresh();
	}
}

export const teams = new Teams();
