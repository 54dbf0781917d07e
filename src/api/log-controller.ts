import { LogController, type FastifyReply, type FastifyRequest } from 'fastify';

/**
 * Per-request log lines at debug level only (an API polled by dashboards
 * must not flood the info log). Errors are logged by the error handler:
 * 5xx at error level with the stack, 4xx at debug.
 */
export class DebugRequestLogs extends LogController {
  override incomingRequest(request: FastifyRequest): void {
    request.log.debug({ req: request }, 'incoming request');
  }

  override requestCompleted(_error: Error | null, request: FastifyRequest, reply: FastifyReply): void {
    request.log.debug({ status: reply.statusCode, ms: Math.round(reply.elapsedTime) }, 'request completed');
  }

  override routeNotFound(request: FastifyRequest): void {
    request.log.debug({ method: request.method, url: request.url }, 'route not found');
  }
}
