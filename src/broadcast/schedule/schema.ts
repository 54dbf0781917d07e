/**
 * The request bodies of schedules and "play now" as TypeBox schemas. Each
 * schema object is both what the API publishes in OpenAPI (src/api/routes)
 * and what BroadcastService checks a body's shape with (model.ts), so the
 * documentation cannot drift from what is accepted. `x-message` holds the
 * message commune staff get for a field that does not fit (core/schema.ts).
 *
 * What a schema cannot say stays as code in model.ts: the time zone exists,
 * the cron expression parses and runs, cron xor at, at not in the past,
 * date order, a stream's durationSec, durationSec against the cron spacing.
 */
import { Type, type Static } from 'typebox';
import { Compile } from 'typebox/compile';
import { StringEnum } from '../../core/schema.js';
import { DEVICE_ID_RE } from '../../devices/types.js';

/** Longest accepted durationSec (one day). */
export const MAX_DURATION_SEC = 86_400;
export const DEFAULT_VOLUME = 70;
export const SCHEDULE_PRIORITIES = ['normal', 'priority'] as const;

const CONTENT_SHAPE = 'exactly one of {"mediaId"}, {"streamUrl"} or {"ttsText"}';
const TIME_MESSAGE = 'expected ISO 8601 with offset or epoch milliseconds';

const TimeOrMs = Type.Union([Type.String(), Type.Integer()], {
  description: 'Validity bound of a recurring schedule: a date YYYY-MM-DD in the schedule\'s zone (startDate: from the start of that day; endDate: to its end), or ISO 8601 with offset, or epoch ms',
  'x-message': TIME_MESSAGE,
});
const At = Type.Union([Type.String(), Type.Integer()], {
  description: 'One-off: when to play, ISO 8601 with offset (e.g. 2026-12-01T06:30:00+07:00) or epoch ms (a date YYYY-MM-DD alone means 00:00 in the schedule\'s zone); not in the past',
  'x-message': TIME_MESSAGE,
});

export const Target = Type.Object({
  areas: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64, 'x-message': 'not a valid area code' }), {
    maxItems: 10_000, description: 'Area codes; an area includes its villages\' speakers', 'x-message': 'must be an array',
  })),
  devices: Type.Optional(Type.Array(Type.String({ pattern: DEVICE_ID_RE.source, 'x-message': 'not a valid device id' }), {
    maxItems: 10_000, description: 'Speaker device ids', 'x-message': 'must be an array',
  })),
}, {
  additionalProperties: false,
  description: 'Where to play: at least one area or device',
  'x-message': 'required: {"areas"?: [code], "devices"?: [id]}',
});

export const Content = Type.Object({
  mediaId: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'A media library item', 'x-message': 'must be a media id' })),
  streamUrl: Type.Optional(Type.String({
    maxLength: 2048, pattern: '^[Hh][Tt][Tt][Pp][Ss]?:',
    description: 'An Icecast/HTTP stream relayed as it is (durationSec required). No user name or password in it (400); '
      + 'its host must be public or listed in broadcast.streamHosts (422)',
    'x-message': 'must be an http:// or https:// URL',
  })),
  ttsText: Type.Optional(Type.String({
    maxLength: 5000, pattern: '\\S',
    description: 'Vietnamese text, rendered once with espeak-ng and stored as a mediaId (503 when the engine is missing)',
    'x-message': 'must be 1-5000 characters',
  })),
}, {
  additionalProperties: false, minProperties: 1, maxProperties: 1,
  description: 'Exactly one of mediaId, streamUrl, ttsText',
  // A wrong key is a wrong choice of content, not a stray field.
  'x-message': { type: `required: ${CONTENT_SHAPE}`, required: `required: ${CONTENT_SHAPE}`, additionalProperties: CONTENT_SHAPE, default: CONTENT_SHAPE },
});

export const Priority = StringEnum(SCHEDULE_PRIORITIES, {
  description: 'thông thường / ưu tiên; a priority item goes before normal ones. Emergency is for alerts.',
  'x-message': 'must be "normal" or "priority"',
});
/** Said instead of the enum message: the value exists, but not here. */
export const EMERGENCY_MESSAGE = 'emergency is reserved for alerts (POST /api/v1/alerts)';

const Volume = Type.Integer({ minimum: 0, maximum: 100, default: DEFAULT_VOLUME, 'x-message': 'must be an integer 0-100' });
const durationSec = (description: string) => Type.Number({
  exclusiveMinimum: 0, maximum: MAX_DURATION_SEC, description,
  'x-message': `must be a number of seconds, > 0 and <= ${MAX_DURATION_SEC}`,
});

/** Sent back by a GET; a client may echo it in a body, where it is ignored. */
const echoed = (description: string) => Type.Optional(Type.Unknown({ readOnly: true, description: `${description} (read-only, ignored on input)` }));

export const NewSchedule = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 200, pattern: '\\S', 'x-message': 'required, 1-200 characters' }),
  target: Target,
  content: Content,
  cron: Type.Optional(Type.String({
    description: 'Recurring: 5 fields "m h dom mon dow" in the schedule\'s time zone', 'x-message': 'must be a string "m h dom mon dow"',
  })),
  at: Type.Optional(At),
  timezone: Type.Optional(Type.String({
    description: 'IANA zone; default the commune\'s (KENG_TZ, Asia/Ho_Chi_Minh)',
    'x-message': 'unknown time zone; use an IANA name such as Asia/Ho_Chi_Minh',
  })),
  volume: Type.Optional(Volume),
  priority: Type.Optional(Priority),
  durationSec: Type.Optional(durationSec('Play length; default the media\'s duration; required for streams')),
  startDate: Type.Optional(TimeOrMs),
  endDate: Type.Optional(TimeOrMs),
  enabled: Type.Optional(Type.Boolean({ default: true, 'x-message': 'must be true or false' })),
  id: echoed('Schedule id'),
  createdAt: echoed('Creation time'),
  updatedAt: echoed('Last change'),
  createdBy: echoed('Who created it'),
  lastFiredAt: echoed('Last occurrence handled'),
  nextRuns: echoed('Coming occurrences'),
}, {
  additionalProperties: false,
  description: 'Exactly one of cron (recurring) or at (one-off, not in the past). Overlapping another schedule on the same speaker is 409 unless this one has higher priority.',
  'x-message': { type: 'must be a JSON object' },
});
export type NewScheduleBody = Static<typeof NewSchedule>;

export const SchedulePatch = Type.Partial(NewSchedule, {
  additionalProperties: false,
  description: 'Fields to change; target and content are replaced whole; null removes a field (e.g. {"cron": "0 6 * * *", "at": null}).',
  'x-message': { type: 'must be a JSON object' },
});

export const PlayNow = Type.Object({
  target: Target,
  content: Content,
  volume: Type.Optional(Volume),
  priority: Type.Optional(StringEnum(SCHEDULE_PRIORITIES, { default: 'normal', 'x-message': 'must be "normal" or "priority"' })),
  durationSec: Type.Optional(durationSec('Required for a stream: how long to relay it')),
}, {
  additionalProperties: false,
  description: 'Play now on the target\'s speakers (same target, content, volume, priority as a schedule)',
  'x-message': { type: 'must be a JSON object' },
});
export type PlayNowBody = Static<typeof PlayNow>;

/** Compiled once; `Type()` of each is the very schema object the routes publish. */
export const NewScheduleShape = Compile(NewSchedule);
export const SchedulePatchShape = Compile(SchedulePatch);
export const PlayNowShape = Compile(PlayNow);
