// External proof for message delivery:
//   node exchange.mjs <host:port>
// Two libsignal clients talk through Guardyn: Alice builds a session from the bundle the
// server returns, sends a PreKey message with SendMessage; Bob receives it from Listen,
// decrypts it with libsignal and acknowledges it, then replies; Alice receives and decrypts
// the reply. The server only ever sees ciphertext. Prints OK on success.

import { buf, call, clients, makeDevice, nextEnvelope, run, signal, toBundle } from './lib.mjs';

const addr = process.argv[2];
if (!addr) {
  console.error('usage: node exchange.mjs <host:port>');
  process.exit(2);
}

run(async () => {
  const { auth, keys, messaging } = clients(addr);
  const aliceDev = makeDevice(101);
  const bobDev = makeDevice(202);
  const suffix = Math.floor(Math.random() * 1e9);
  const password = 'libsignal interop password';
  const alice = await call(auth, 'Register', { username: `alice${suffix}`, password, device: aliceDev.upload });
  const bob = await call(auth, 'Register', { username: `bob${suffix}`, password, device: bobDev.upload });
  const aliceToken = alice.tokens.access_token;
  const bobToken = bob.tokens.access_token;
  const aliceAddress = signal.ProtocolAddress.new(alice.account_id, 1);
  const bobAddress = signal.ProtocolAddress.new(bob.account_id, 1);

  // Alice -> Bob: a PreKey message built from the server's bundle.
  const res = await call(keys, 'GetPreKeyBundle', { account_id: bob.account_id, device_id: 0 }, aliceToken);
  const b = res.bundles[0];
  const a = aliceDev.stores;
  await signal.processPreKeyBundle(toBundle(b), bobAddress, aliceAddress, a.sessions, a.identities);
  const first = await signal.signalEncrypt(Buffer.from('hello bob'), bobAddress, aliceAddress, a.sessions, a.identities);
  if (first.type() !== signal.CiphertextMessageType.PreKey) throw new Error('expected a PreKey message');
  await call(messaging, 'SendMessage', {
    destination_account_id: bob.account_id,
    client_message_id: `m1-${suffix}`,
    envelopes: [{
      destination_device_id: b.device_id,
      destination_registration_id: b.registration_id,
      type: 'ENVELOPE_TYPE_PREKEY_MESSAGE',
      content: buf(first.serialize()),
    }],
  }, aliceToken);

  const got = await nextEnvelope(messaging, bobToken);
  if (got.type !== 'ENVELOPE_TYPE_PREKEY_MESSAGE') throw new Error(`unexpected type ${got.type}`);
  if (got.sender_account_id !== alice.account_id || got.sender_device_id !== 1) {
    throw new Error('the envelope does not name its sender');
  }
  if (Buffer.compare(buf(got.content), buf(first.serialize())) !== 0) {
    throw new Error('the server changed the ciphertext');
  }
  const s = bobDev.stores;
  const plain = await signal.signalDecryptPreKey(
    signal.PreKeySignalMessage.deserialize(buf(got.content)),
    aliceAddress, bobAddress, s.sessions, s.identities, s.prekeys, s.signedPrekeys, s.kyberPrekeys,
  );
  if (Buffer.from(plain).toString() !== 'hello bob') throw new Error('Bob decrypted something else');
  await call(messaging, 'Ack', { server_ids: [got.server_id] }, bobToken);

  // Bob -> Alice on the established session: a normal (Whisper) message.
  const reply = await signal.signalEncrypt(Buffer.from('hello alice'), aliceAddress, bobAddress, s.sessions, s.identities);
  if (reply.type() !== signal.CiphertextMessageType.Whisper) throw new Error('expected a Whisper message');
  await call(messaging, 'SendMessage', {
    destination_account_id: alice.account_id,
    client_message_id: `m2-${suffix}`,
    envelopes: [{
      destination_device_id: 1,
      destination_registration_id: aliceDev.registrationId,
      type: 'ENVELOPE_TYPE_CIPHERTEXT',
      content: buf(reply.serialize()),
    }],
  }, bobToken);
  const back = await nextEnvelope(messaging, aliceToken);
  const plainBack = await signal.signalDecrypt(
    signal.SignalMessage.deserialize(buf(back.content)),
    bobAddress, aliceAddress, a.sessions, a.identities,
  );
  if (Buffer.from(plainBack).toString() !== 'hello alice') throw new Error('Alice decrypted something else');
  await call(messaging, 'Ack', { server_ids: [back.server_id] }, aliceToken);

  // Acknowledged: nothing is redelivered.
  let redelivered = null;
  try {
    redelivered = await nextEnvelope(messaging, bobToken, 1000);
  } catch {
    // Timed out: the queue is empty, as it must be.
  }
  if (redelivered) throw new Error('an acknowledged envelope was delivered again');
  console.log('OK');
});
