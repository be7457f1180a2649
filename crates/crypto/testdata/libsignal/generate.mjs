// Generates XEdDSA known-answer vectors with the official libsignal client and checks that
// signatures produced by guardyn-crypto verify under libsignal. Not run in CI: the Rust tests
// read the committed vectors.json. Regenerating replaces every vector (libsignal signs with a
// random nonce, so the signatures change on every run; the Rust test only verifies them).
//
// How the vectors were produced (run once, manually):
//   cd crates/crypto/testdata/libsignal
//   npm install                      # installs @signalapp/libsignal-client@0.103.0 (pinned)
//   node generate.mjs                # writes vectors.json
//   # then, to check the reverse direction (our signatures verified by libsignal):
//   GUARDYN_WRITE_OURS=1 cargo test -p guardyn-crypto write_ours_for_libsignal
//                                    # writes ours.json next to this script
//   node generate.mjs --check-ours   # exits non-zero if libsignal rejects any of them
import { readFileSync, writeFileSync } from 'node:fs';
import { IdentityKeyPair, KEMKeyPair, PrivateKey, PublicKey } from '@signalapp/libsignal-client';

const here = new URL('.', import.meta.url);
const hex = (b) => Buffer.from(b).toString('hex');
const unhex = (s) => new Uint8Array(Buffer.from(s, 'hex'));

function checkOurs() {
  const ours = JSON.parse(readFileSync(new URL('ours.json', here), 'utf8'));
  let failures = 0;
  for (const v of ours.vectors) {
    const key = PublicKey.deserialize(unhex(v.identity_key));
    const msg = unhex(v.message);
    const sig = unhex(v.signature);
    const ok = key.verify(msg, sig);
    const flipped = Uint8Array.from(sig);
    flipped[5] ^= 0x01;
    const rejected = !key.verify(msg, flipped);
    console.log(`${v.name}: libsignal verify=${ok}, flipped rejected=${rejected}`);
    if (!ok || !rejected) failures += 1;
  }
  if (failures > 0) {
    console.error(`${failures} signature(s) from guardyn-crypto failed under libsignal`);
    process.exit(1);
  }
  console.log(`all ${ours.vectors.length} guardyn-crypto signatures verify under libsignal`);
}

function generate() {
  const vectors = [];
  for (let i = 0; i < 3; i += 1) {
    const identity = IdentityKeyPair.generate();
    const ik = identity.publicKey.serialize();

    // Signed EC prekey: libsignal signs the 33-byte serialized public key.
    const spk = PrivateKey.generate().getPublicKey().serialize();
    vectors.push({
      name: `signed_ec_prekey_${i}`,
      identity_key: hex(ik),
      message: hex(spk),
      signature: hex(identity.privateKey.sign(spk)),
    });

    // Kyber1024 prekey: 1569 bytes, type byte 0x08.
    const kyber = KEMKeyPair.generate().getPublicKey().serialize();
    vectors.push({
      name: `kyber1024_prekey_${i}`,
      identity_key: hex(ik),
      message: hex(kyber),
      signature: hex(identity.privateKey.sign(kyber)),
    });
  }
  // Arbitrary message lengths, including empty.
  const identity = IdentityKeyPair.generate();
  for (const len of [0, 1, 64, 1000]) {
    const msg = new Uint8Array(len).map((_, j) => (j * 7 + len) & 0xff);
    vectors.push({
      name: `arbitrary_${len}_bytes`,
      identity_key: hex(identity.publicKey.serialize()),
      message: hex(msg),
      signature: hex(identity.privateKey.sign(msg)),
    });
  }
  for (const v of vectors) {
    if (!PublicKey.deserialize(unhex(v.identity_key)).verify(unhex(v.message), unhex(v.signature))) {
      throw new Error(`libsignal failed to verify its own vector ${v.name}`);
    }
  }
  const out = {
    generator: '@signalapp/libsignal-client@0.103.0',
    note: 'XEdDSA signatures by libsignal IdentityKeyPair.privateKey.sign over the hex message',
    vectors,
  };
  writeFileSync(new URL('vectors.json', here), JSON.stringify(out, null, 2) + '\n');
  console.log(`wrote ${vectors.length} vectors`);
}

if (process.argv.includes('--check-ours')) {
  checkOurs();
} else {
  generate();
}
