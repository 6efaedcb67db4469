import {
  activeIntermediate,
  checkActivateRoot,
  checkRetireRoot,
  checkRevokeIssuer,
  checkTaint,
  importedIntermediate,
  type RotationContext,
  readRotationState,
  requireKeyHere,
  signingRoot,
} from "./rotation";
import type { IssuerRecord, IssuerState } from "./store";

/**
 * Dry runs of the rotation steps (`--dry-run`): the same checks as the step in
 * ca/rotation.ts, so a plan is refused exactly when the step would be, then a
 * description of what the step would change. Nothing is written: no key, no
 * store row, no audit record.
 */

/** One issuer whose state the step would change, with the certificates that hang on it. */
export interface IssuerChange {
  /** null for an issuer the step would create (its id comes from a key not made yet). */
  id: string | null;
  kind: "root" | "intermediate";
  from: IssuerState | "new";
  to: IssuerState | "revoked";
  /** Unexpired, unrevoked certificates it signed (for a root: those of its intermediates). */
  live: number;
  /** Of those, the ones no newer certificate from another issuer has replaced. */
  unreplaced: number;
}

export interface RotationPlan {
  step: string;
  issuers: IssuerChange[];
  /** What else moves: the bundle, CRLs, cross-certificates; one sentence each. */
  effects: string[];
}

async function counts(ctx: RotationContext, issuer: IssuerRecord) {
  const { live, unreplaced } = await ctx.store.issuerProgress(issuer.id, ctx.now);
  return { live, unreplaced };
}

function created(kind: "root" | "intermediate"): IssuerChange {
  return { id: null, kind, from: "new", to: "active", live: 0, unreplaced: 0 };
}

async function retiring(ctx: RotationContext, issuer: IssuerRecord | null): Promise<IssuerChange[]> {
  if (!issuer) return [];
  return [
    { id: issuer.id, kind: issuer.kind, from: issuer.state, to: "retired", ...(await counts(ctx, issuer)) },
  ];
}

export async function planRotate(
  ctx: RotationContext,
  opts: { importedDer?: Buffer },
): Promise<RotationPlan> {
  const issuers = await ctx.store.listIssuers();
  const current = activeIntermediate(issuers) ?? null;
  let next: IssuerChange;
  let parent: string | null;
  if (opts.importedDer) {
    const imported = await importedIntermediate(ctx, issuers, opts.importedDer);
    next = { ...created("intermediate"), id: imported.id };
    parent = imported.parentId;
  } else {
    const root = signingRoot(issuers, current);
    await requireKeyHere(ctx, root);
    next = created("intermediate");
    parent = root.id;
  }
  return {
    step: "ca rotate",
    issuers: [next, ...(await retiring(ctx, current))],
    effects: [
      `the new intermediate is signed by root ${parent}`,
      "the retired intermediate's certificates stay valid; agents move at their next renewal",
    ],
  };
}

export async function planTaint(
  ctx: RotationContext,
  id: string,
  deadline: Date | null,
): Promise<RotationPlan> {
  const issuer = checkTaint(ctx, await ctx.store.listIssuers(), id, deadline);
  return {
    step: "ca taint",
    issuers: [
      { id: issuer.id, kind: issuer.kind, from: issuer.state, to: "tainted", ...(await counts(ctx, issuer)) },
    ],
    effects: [
      "the renewal windows (ARI) of its certificates start now",
      deadline
        ? `the server revokes it at ${deadline.toISOString()}`
        : "it is not revoked until `stint ca revoke-issuer`",
    ],
  };
}

export async function planRevokeIssuer(
  ctx: RotationContext,
  id: string,
  opts: { force: boolean },
): Promise<RotationPlan> {
  const issuers = await ctx.store.listIssuers();
  const { issuer, progress } = await checkRevokeIssuer(ctx, issuers, id, opts);
  const root = issuers.find((i) => i.id === issuer.parentId);
  let rootCrl = false;
  if (root)
    rootCrl = await requireKeyHere(ctx, root).then(
      () => true,
      () => false,
    );
  return {
    step: "ca revoke-issuer",
    issuers: [
      {
        id: issuer.id,
        kind: issuer.kind,
        from: issuer.state,
        to: "revoked",
        live: progress.live,
        unreplaced: progress.unreplaced,
      },
    ],
    effects: [
      `verifiers reject its ${progress.live} live certificates (${progress.unreplaced} not replaced)`,
      rootCrl
        ? `root ${issuer.parentId}'s CRL is re-signed to list it`
        : `root ${issuer.parentId}'s key is not here: only the revocation feed lists it`,
    ],
  };
}

export async function planActivateRoot(
  ctx: RotationContext,
  opts: { bundleRefreshMs: number; force: boolean },
): Promise<RotationPlan> {
  const issuers = await ctx.store.listIssuers();
  const { next, current, oldRoot } = await checkActivateRoot(ctx, issuers, opts);
  return {
    step: "ca root activate",
    issuers: [
      { id: next.id, kind: "root", from: next.state, to: "active", live: 0, unreplaced: 0 },
      created("intermediate"),
      ...(await retiring(ctx, current)),
    ],
    effects: [
      `the new intermediate is signed by root ${next.id}`,
      `root ${oldRoot.id} cross-signs root ${next.id}; chains carry the cross-certificate until \`stint ca root retire\``,
    ],
  };
}

export async function planRetireRoot(
  ctx: RotationContext,
  opts: { id?: string; force: boolean },
): Promise<RotationPlan> {
  const issuers = await ctx.store.listIssuers();
  const root = await checkRetireRoot(ctx, issuers, opts);
  const revoked = (await readRotationState(ctx.store, issuers)).revoked;
  let live = 0;
  let unreplaced = 0;
  for (const child of issuers.filter((i) => i.parentId === root.id && !revoked.has(i.id))) {
    const c = await counts(ctx, child);
    live += c.live;
    unreplaced += c.unreplaced;
  }
  return {
    step: "ca root retire",
    issuers: [{ id: root.id, kind: "root", from: root.state, to: "retired", live, unreplaced }],
    effects: [
      "it leaves /bundle.pem and /bundle.json (sequence bumped)",
      `${live} live certificates still chain to it (${unreplaced} not replaced)`,
    ],
  };
}

/** The plan as the CLI prints it without --json. */
export function describePlan(plan: RotationPlan): string[] {
  return [
    `dry run: stint ${plan.step} would change (nothing was changed):`,
    ...plan.issuers.map(
      (i) =>
        `  ${i.kind} ${i.id ?? "(new)"}: ${i.from} -> ${i.to}` +
        (i.from === "new" ? "" : ` (${i.live} live certificates, ${i.unreplaced} not replaced)`),
    ),
    ...plan.effects.map((e) => `  ${e}`),
  ];
}
