/** Ed25519 command keys: sign `broadcast.play` / `broadcast.stop` (firmware-protocols/device-protocol.md §11.6). */
export { COMMAND_KEYS_POLL_MS, COMMAND_KEYS_SECRET, CommandKeys, type CommandKeyInfo, type CommandKeysOptions } from './ring.js';
export { COMMAND_KEYS_FILE } from './file.js';
export { keyFromSeed, kidOf, signCommand, signCommandAsync, signedString, verifySigned, type SigningKey } from './keys.js';
