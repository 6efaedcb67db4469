import type { AuditEvent } from "../store";
import type {
  AccountRecord,
  AccountStatus,
  AcmeStateStore,
  AttestationRecord,
  AuthorizationRecord,
  AuthorizationStatus,
  ChallengeRecord,
  EntryRecord,
  JoinTokenRecord,
  JoinTokenSpend,
  OrderRecord,
  OrderStatus,
} from "../store-acme";

/**
 * Both backends keep ACME state in a part of their own (sqlite-acme.ts,
 * postgres-acme.ts); this base class answers AcmeStateStore for them by
 * handing every call to that part, so the hand-offs are written once.
 */
export abstract class AcmeStateDelegate implements AcmeStateStore {
  protected abstract readonly acme: AcmeStateStore;

  createAccount(account: AccountRecord, audit: AuditEvent) {
    return this.acme.createAccount(account, audit);
  }
  getAccount(id: string) {
    return this.acme.getAccount(id);
  }
  getAccountByThumbprint(thumbprint: string) {
    return this.acme.getAccountByThumbprint(thumbprint);
  }
  updateAccount(id: string, patch: { status?: AccountStatus; contact?: string[] }, audit: AuditEvent) {
    return this.acme.updateAccount(id, patch, audit);
  }
  changeAccountKey(
    id: string,
    oldThumbprint: string,
    jwk: Record<string, unknown>,
    thumbprint: string,
    audit: AuditEvent,
  ) {
    return this.acme.changeAccountKey(id, oldThumbprint, jwk, thumbprint, audit);
  }
  createOrder(order: OrderRecord, authorizations: AuthorizationRecord[]) {
    return this.acme.createOrder(order, authorizations);
  }
  getOrder(id: string) {
    return this.acme.getOrder(id);
  }
  updateOrder(
    id: string,
    expect: OrderStatus,
    patch: Partial<Pick<OrderRecord, "status" | "certificateSerial" | "error">>,
  ) {
    return this.acme.updateOrder(id, expect, patch);
  }
  listAccountOrders(accountId: string, page: { after?: string; limit: number }) {
    return this.acme.listAccountOrders(accountId, page);
  }
  listProcessingOrders(limit: number) {
    return this.acme.listProcessingOrders(limit);
  }
  unclaimedCertificate(attestationId: string) {
    return this.acme.unclaimedCertificate(attestationId);
  }
  accountOfCertificate(serial: string) {
    return this.acme.accountOfCertificate(serial);
  }
  getAuthorization(id: string) {
    return this.acme.getAuthorization(id);
  }
  updateAuthorization(
    id: string,
    expect: AuthorizationStatus,
    patch: Partial<Pick<AuthorizationRecord, "status" | "challenges" | "entryId" | "selectors">>,
  ) {
    return this.acme.updateAuthorization(id, expect, patch);
  }
  recordAttestation(
    attestation: AttestationRecord,
    expect: AuthorizationStatus,
    challenges: ChallengeRecord[],
    audit: AuditEvent,
    token?: JoinTokenSpend,
  ) {
    return this.acme.recordAttestation(attestation, expect, challenges, audit, token);
  }
  getAttestation(id: string) {
    return this.acme.getAttestation(id);
  }
  createEntry(entry: EntryRecord, audit: AuditEvent) {
    return this.acme.createEntry(entry, audit);
  }
  getEntry(id: string) {
    return this.acme.getEntry(id);
  }
  listEntries(filter: { spiffeId?: string }) {
    return this.acme.listEntries(filter);
  }
  deleteEntry(id: string, audit: AuditEvent) {
    return this.acme.deleteEntry(id, audit);
  }
  createJoinToken(token: JoinTokenRecord, audit: AuditEvent) {
    return this.acme.createJoinToken(token, audit);
  }
  findJoinToken(hash: string, now: Date) {
    return this.acme.findJoinToken(hash, now);
  }
  consumeJoinToken(hash: string, now: Date, spend: (token: { id: string; spiffeId: string }) => AuditEvent) {
    return this.acme.consumeJoinToken(hash, now, spend);
  }
}
