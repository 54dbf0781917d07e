import { describe, expect, it } from 'vitest';
import createError from '@fastify/error';
import { Errors, withDetails } from '../../src/core/errors.js';
import { classifyError, validationDetails, type AjvLikeError } from '../../src/api/errors.js';

const fastifyError = (code: string, status: number, msg = 'x'): Error => new (createError(code, msg, status))();

describe('classifyError', () => {
  it('passes Keng errors through with their status, code, message and details', () => {
    const c = classifyError(withDetails(Errors.BAD_TIME('from'), [{ field: 'from' }]));
    expect(c).toEqual({
      status: 400, internal: false,
      body: { error: { code: 'KENG_ERR_BAD_TIME', message: expect.stringContaining('"from"'), details: [{ field: 'from' }] } },
    });
    expect(classifyError(Errors.NOT_FOUND('Device "x"')).body.error).toEqual({ code: 'KENG_ERR_NOT_FOUND', message: 'Device "x" not found' });
    expect(classifyError(Errors.STORE_UNAVAILABLE('down')).status).toBe(503);
    // A field device behind Keng (Modbus): refused, unreachable, no answer.
    expect(classifyError(Errors.MODBUS_EXCEPTION('exception 2')).status).toBe(502);
    expect(classifyError(Errors.MODBUS_UNREACHABLE('down')).status).toBe(503);
    expect(classifyError(Errors.MODBUS_TIMEOUT('300 ms')).status).toBe(504);
    expect(classifyError(Errors.DEVICE_EXISTS('d')).status).toBe(409);
  });

  it('omits details when there are none', () => {
    expect('details' in classifyError(Errors.UNAUTHENTICATED()).body.error).toBe(false);
  });

  it('turns unexpected errors into 500 KENG_ERR_INTERNAL without leaking their message', () => {
    const c = classifyError(new TypeError('cannot read properties of undefined (reading "secret") at /srv/keng/src/x.ts'));
    expect(c).toEqual({ status: 500, internal: true, body: { error: { code: 'KENG_ERR_INTERNAL', message: 'Internal error' } } });
    expect(classifyError('a string').status).toBe(500);
    expect(classifyError(null).status).toBe(500);
    expect(classifyError(Errors.CONFIG('x')).body.error.code).toBe('KENG_ERR_INTERNAL');
  });

  it('maps fastify body errors', () => {
    expect(classifyError(fastifyError('FST_ERR_CTP_BODY_TOO_LARGE', 413), { bodyLimit: 1024 })).toMatchObject({
      status: 413, body: { error: { code: 'KENG_ERR_PAYLOAD_TOO_LARGE', message: expect.stringContaining('1024 bytes') } },
    });
    expect(classifyError(fastifyError('FST_ERR_CTP_INVALID_MEDIA_TYPE', 415))).toMatchObject({ status: 415, body: { error: { code: 'KENG_ERR_UNSUPPORTED_MEDIA_TYPE' } } });
    expect(classifyError(fastifyError('FST_ERR_CTP_INVALID_JSON_BODY', 400))).toMatchObject({ status: 400, body: { error: { code: 'KENG_ERR_VALIDATION' } } });
    expect(classifyError(fastifyError('FST_ERR_CTP_EMPTY_JSON_BODY', 400))).toMatchObject({ status: 400, body: { error: { code: 'KENG_ERR_VALIDATION' } } });
  });

  it('maps other 4xx by status (e.g. 429 from a rate limiter)', () => {
    expect(classifyError(fastifyError('FST_X', 429))).toMatchObject({ status: 429, body: { error: { code: 'KENG_ERR_RATE_LIMITED' } } });
    expect(classifyError(fastifyError('FST_X', 403))).toMatchObject({ status: 403, body: { error: { code: 'KENG_ERR_FORBIDDEN' } } });
    expect(classifyError(fastifyError('FST_X', 418))).toMatchObject({ status: 400, body: { error: { code: 'KENG_ERR_VALIDATION' } } });
    expect(classifyError(fastifyError('FST_X', 502))).toMatchObject({ status: 500, internal: true });
  });

  it('maps schema validation errors to KENG_ERR_VALIDATION with one detail per field', () => {
    const err = Object.assign(new Error('body must have required property'), {
      statusCode: 400, code: 'FST_ERR_VALIDATION', validationContext: 'body',
      validation: [
        { keyword: 'required', instancePath: '', schemaPath: '#/required', params: { missingProperty: 'name' }, message: "must have required property 'name'" },
        { keyword: 'enum', instancePath: '/kind', schemaPath: '#/properties/kind/enum', params: { allowedValues: ['sensor', 'speaker'] } },
      ],
    });
    const c = classifyError(err);
    expect(c.status).toBe(400);
    expect(c.body.error.code).toBe('KENG_ERR_VALIDATION');
    expect(c.body.error.details).toEqual([
      { in: 'body', field: 'name', message: 'is required' },
      { in: 'body', field: 'kind', message: 'must be one of: sensor, speaker' },
    ]);
    expect(c.body.error.message).toBe('Invalid request: body.name is required; body.kind must be one of: sensor, speaker');
  });
});

describe('validationDetails', () => {
  const e = (keyword: string, instancePath: string, schemaPath: string, params: Record<string, unknown> = {}, message?: string): AjvLikeError =>
    ({ keyword, instancePath, schemaPath, params, message });

  it('names unknown properties and nested fields with dots', () => {
    expect(validationDetails([
      e('additionalProperties', '/location', '#/properties/location/additionalProperties', { additionalProperty: 'alt' }),
      e('maximum', '/location/lat', '#/properties/location/properties/lat/maximum', { limit: 90 }, 'must be <= 90'),
    ], 'body')).toEqual([
      { in: 'body', field: 'location.alt', message: 'is not a known property' },
      { in: 'body', field: 'location.lat', message: 'must be <= 90' },
    ]);
  });

  it('reports the nested failure of an "object or null" alternative', () => {
    expect(validationDetails([
      e('maximum', '/location/lat', '#/properties/location/anyOf/0/properties/lat/maximum', {}, 'must be <= 90'),
      e('type', '/location', '#/properties/location/anyOf/1/type', { type: 'null' }, 'must be null'),
      e('anyOf', '/location', '#/properties/location/anyOf', {}, 'must match a schema in anyOf'),
    ], 'body')).toEqual([{ in: 'body', field: 'location.lat', message: 'must be <= 90' }]);
  });

  it('collapses type alternatives into one message', () => {
    expect(validationDetails([
      e('type', '/model', '#/properties/model/anyOf/0/type', { type: 'string' }, 'must be string'),
      e('type', '/model', '#/properties/model/anyOf/1/type', { type: 'null' }, 'must be null'),
      e('anyOf', '/model', '#/properties/model/anyOf', {}, 'must match a schema in anyOf'),
    ], 'body')).toEqual([{ in: 'body', field: 'model', message: 'must be string or null' }]);
  });

  it('de-duplicates and caps the list', () => {
    const many = Array.from({ length: 80 }, (_, i) => e('type', `/f${i}`, `#/properties/f${i}/type`, { type: 'string' }, 'must be string'));
    expect(validationDetails([...many, ...many], 'querystring')).toHaveLength(50);
  });
});
