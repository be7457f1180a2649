// Shared pieces of the libsignal interop scripts: the Guardyn gRPC clients (protos loaded from
// the repository's proto/), libsignal key material for one device, and in-memory stores.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import * as signal from '@signalapp/libsignal-client';

export { signal };

const here = path.dirname(fileURLToPath(import.meta.url));
const protoRoot = path.resolve(here, '../../../../proto');

/** Unary and streaming clients for the services the scripts use. */
export function clients(addr) {
  const def = protoLoader.loadSync(
    [
      'guardyn/auth/v1/auth.proto',
      'guardyn/auth/v1/devices.proto',
      'guardyn/auth/v1/keys.proto',
      'guardyn/messaging/v1/messaging.proto',
    ],
    { includeDirs: [protoRoot], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
  );
  const root = grpc.loadPackageDefinition(def).guardyn;
  const creds = grpc.credentials.createInsecure();
  return {
    auth: new root.auth.v1.AuthService(addr, creds),
    keys: new root.auth.v1.KeyDirectoryService(addr, creds),
    messaging: new root.messaging.v1.MessagingService(addr, creds),
  };
}

function metadata(token) {
  const md = new grpc.Metadata();
  if (token) md.add('authorization', `Bearer ${token}`);
  return md;
}

/** A unary call as a promise. */
export const call = (client, method, request, token) =>
  new Promise((resolve, reject) => {
    client[method](request, metadata(token), (err, res) => (err ? reject(err) : resolve(res)));
  });

/** Opens Listen and resolves with the first envelope delivered (the stream is then closed). */
export function nextEnvelope(messaging, token, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const stream = messaging.Listen({}, metadata(token));
    const timer = setTimeout(() => {
      stream.cancel();
      reject(new Error('no envelope within the timeout'));
    }, timeoutMs);
    stream.on('data', (item) => {
      if (item.envelope) {
        clearTimeout(timer);
        stream.cancel();
        resolve(item.envelope);
      }
    });
    stream.on('error', (err) => {
      if (err.code !== grpc.status.CANCELLED) {
        clearTimeout(timer);
        reject(err);
      }
    });
  });
}

export const buf = (u8) => Buffer.from(u8);

/** A device's libsignal key material, its stores, and its public upload for Register. */
export function makeDevice(registrationId) {
  const identity = signal.IdentityKeyPair.generate();
  const signedPriv = signal.PrivateKey.generate();
  const signedPub = signedPriv.getPublicKey();
  const signedSig = identity.privateKey.sign(signedPub.serialize());
  const kyber = signal.KEMKeyPair.generate();
  const kyberSig = identity.privateKey.sign(kyber.getPublicKey().serialize());
  const lastResort = signal.KEMKeyPair.generate();
  const lastResortSig = identity.privateKey.sign(lastResort.getPublicKey().serialize());
  const oneTime = [1, 2, 3].map((id) => ({ id, priv: signal.PrivateKey.generate() }));

  const stores = {
    sessions: new MemorySessions(),
    identities: new MemoryIdentities(identity, registrationId),
    prekeys: new MemoryPreKeys(),
    signedPrekeys: new MemorySignedPreKeys(),
    kyberPrekeys: new MemoryKyberPreKeys(),
  };
  const now = Date.now();
  for (const k of oneTime) {
    stores.prekeys.map.set(k.id, signal.PreKeyRecord.new(k.id, k.priv.getPublicKey(), k.priv));
  }
  stores.signedPrekeys.map.set(7, signal.SignedPreKeyRecord.new(7, now, signedPub, signedPriv, signedSig));
  stores.kyberPrekeys.map.set(11, signal.KyberPreKeyRecord.new(11, now, kyber, kyberSig));
  stores.kyberPrekeys.map.set(900, signal.KyberPreKeyRecord.new(900, now, lastResort, lastResortSig));

  return {
    identity,
    registrationId,
    stores,
    upload: {
      name: 'libsignal',
      registration_id: registrationId,
      identity_key: buf(identity.publicKey.serialize()),
      signed_prekey: { key_id: 7, public_key: buf(signedPub.serialize()), signature: buf(signedSig) },
      last_resort_kem_prekey: {
        key_id: 900,
        public_key: buf(lastResort.getPublicKey().serialize()),
        signature: buf(lastResortSig),
      },
      one_time_kem_prekeys: [
        { key_id: 11, public_key: buf(kyber.getPublicKey().serialize()), signature: buf(kyberSig) },
      ],
      one_time_prekeys: oneTime.map((k) => ({ key_id: k.id, public_key: buf(k.priv.getPublicKey().serialize()) })),
    },
  };
}

/** A libsignal PreKeyBundle from one `DeviceBundle` of GetPreKeyBundle. */
export function toBundle(b) {
  return signal.PreKeyBundle.new(
    b.registration_id,
    b.device_id,
    b.one_time_prekey ? b.one_time_prekey.key_id : null,
    b.one_time_prekey ? signal.PublicKey.deserialize(b.one_time_prekey.public_key) : null,
    b.signed_prekey.key_id,
    signal.PublicKey.deserialize(b.signed_prekey.public_key),
    b.signed_prekey.signature,
    signal.PublicKey.deserialize(b.identity_key),
    b.kem_prekey.key_id,
    signal.KEMPublicKey.deserialize(b.kem_prekey.public_key),
    b.kem_prekey.signature,
  );
}

export class MemorySessions extends signal.SessionStore {
  constructor() { super(); this.map = new Map(); }
  async saveSession(name, record) { this.map.set(name.toString(), record.serialize()); }
  async getSession(name) {
    const s = this.map.get(name.toString());
    return s ? signal.SessionRecord.deserialize(s) : null;
  }
  async getExistingSessions(addresses) {
    return Promise.all(addresses.map((a) => this.getSession(a)));
  }
}

export class MemoryIdentities extends signal.IdentityKeyStore {
  constructor(identity, registrationId) {
    super(); this.identity = identity; this.registrationId = registrationId; this.map = new Map();
  }
  async getIdentityKey() { return this.identity.privateKey; }
  async getLocalRegistrationId() { return this.registrationId; }
  async saveIdentity(name, key) {
    const had = this.map.get(name.toString());
    this.map.set(name.toString(), key.serialize());
    return had && Buffer.compare(had, key.serialize()) !== 0
      ? signal.IdentityChange.ReplacedExisting
      : signal.IdentityChange.NewOrUnchanged;
  }
  async isTrustedIdentity() { return true; }
  async getIdentity(name) {
    const k = this.map.get(name.toString());
    return k ? signal.PublicKey.deserialize(k) : null;
  }
}

class MemoryPreKeys extends signal.PreKeyStore {
  constructor() { super(); this.map = new Map(); }
  async savePreKey(id, record) { this.map.set(id, record); }
  async getPreKey(id) {
    const r = this.map.get(id);
    if (!r) throw new Error(`no prekey ${id}`);
    return r;
  }
  async removePreKey(id) { this.map.delete(id); }
}

class MemorySignedPreKeys extends signal.SignedPreKeyStore {
  constructor() { super(); this.map = new Map(); }
  async saveSignedPreKey(id, record) { this.map.set(id, record); }
  async getSignedPreKey(id) {
    const r = this.map.get(id);
    if (!r) throw new Error(`no signed prekey ${id}`);
    return r;
  }
}

class MemoryKyberPreKeys extends signal.KyberPreKeyStore {
  constructor() { super(); this.map = new Map(); this.used = new Set(); }
  async saveKyberPreKey(id, record) { this.map.set(id, record); }
  async getKyberPreKey(id) {
    const r = this.map.get(id);
    if (!r) throw new Error(`no kyber prekey ${id}`);
    return r;
  }
  async markKyberPreKeyUsed(id) { this.used.add(id); }
}

/** Runs `main` and exits 0 on success, 1 with the error otherwise. */
export function run(main) {
  main().then(
    () => process.exit(0),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
