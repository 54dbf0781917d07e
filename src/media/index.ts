export { MediaLibrary, cleanName, type MediaLibraryOptions, type MediaLibraryDeps, type MediaInUse, type StagedFile, type NewMediaMeta } from './library.js';
export { EspeakTts, TTS_MAX_TEXT, cleanTtsText, type EspeakTtsOptions } from './tts.js';
export { AudioProbe, NotAudioError, lastOutTimeUs, type AudioInfo, type AudioProbeOptions } from './probe.js';
export { UrlSigner, loadOrCreateKey, SIGNING_KEY_FILE, type Verdict } from './signing.js';
export { parseRange, ifRangeMatches, type RangeResult } from './range.js';
export { runTool, checkExecutable, ToolMissingError, type RunOptions, type RunResult } from './run.js';
export { mediaMigration } from './migration.js';
export type { AnnouncementSegment, MediaRecord, MediaRef, MediaSource, AudioFormat, TtsEngine } from './types.js';
export { MediaToolsCheck, TTS_VOICE, type MediaToolsCheckOptions, type MediaToolsReport, type ToolStatus, type ToolName } from './tools-check.js';
