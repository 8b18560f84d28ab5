// The user's teams and the active one, fresh from the API (is_byoc and roles are read from
// there, not from the JWT). `refresh()` after anything that changes them.
import * as auth from './api/auth';
import * as teamsApi from './api/teams';
import type { Team } from './api/types';
import { session } from './session.svelte';

class Teams {
	list = $state<Team[]>([]);
	loaded = $state(false);

	get current(): Team | null {
		return this.list.find((t) => t.id === session.user?.team_id) ?? null;
	}

	async refresh(): Promise<void> {
		this.list = await teamsApi.list();
		this.loaded = true;
	}

	async switchTo(teamId: string): Promise<void> {
		const resp = await auth.switchTeam(teamId);
		session.set(resp.token, { is_admin: session.user?.is_admin });
		await this.refresh();
	}
}

export const teams = new Teams();
