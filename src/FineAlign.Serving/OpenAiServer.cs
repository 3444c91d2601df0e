using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FineAlign.Serving;

/// <summary>
/// <c>finealign serve</c>: an OpenAI-compatible HTTP server on ASP.NET Core minimal APIs. GET /v1/models,
/// POST /v1/completions, POST /v1/chat/completions (stream: true as server-sent events), GET /health,
/// GET /metrics, vLLM's POST /v1/load_lora_adapter and /v1/unload_lora_adapter, and FineAlign's own POST /v1/reload_weights. Requests arriving together are decoded in one
/// batched generation call (<see cref="GenerationQueue"/>). Stopping finishes every in-flight request first.
/// </summary>
public sealed class OpenAiServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly GenerationQueue _queue;
    private readonly ServeOptions _options;
    private readonly SemaphoreSlim _reloadLock = new(1, 1);
    private int _stopped;

    private OpenAiServer(WebApplication app, GenerationQueue queue, ServeOptions options, string modelName)
    {
        _app = app;
        _queue = queue;
        _options = options;
        ModelName = modelName;
    }

    /// <summary>The model id clients send.</summary>
    public string ModelName { get; }

    /// <summary>http://host:port of the bound socket (the real port when <see cref="ServeOptions.Port"/> was 0).</summary>
    public Uri BaseAddress { get; private set; } = null!;

    public ServerMetrics Metrics => _queue.Metrics;

    /// <summary>Stopping this lifetime (StopApplication, SIGTERM, Ctrl+C) starts the graceful shutdown.</summary>
    public IHostApplicationLifetime Lifetime => _app.Lifetime;

    internal GenerationQueue Queue => _queue;
    internal ServeOptions Options => _options;
    internal long Created { get; } = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    /// <summary>Loads the model, binds the socket and starts serving; returns once requests are accepted.</summary>
    public static async Task<OpenAiServer> StartAsync(ServeOptions options, CancellationToken cancellationToken = default)
    {
        options.Validate();
        var address = ParseHost(options.Host);
        var model = ServedModel.Load(options.ModelPath, options.DType, options.ChatTemplate);
        string name = options.ServedModelName ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(options.ModelPath)));
        var queue = new GenerationQueue(name, model, options.MaxBatch, options.BatchWindow, new ServerMetrics());
        try
        {
            var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory, Args = [] });
            builder.Logging.ClearProviders();
            if (!options.HandleSignals) builder.Services.AddSingleton<IHostLifetime, EmbeddedLifetime>();
            builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = options.ShutdownTimeout);
            builder.WebHost.ConfigureKestrel(k =>
            {
                k.AddServerHeader = false;
                k.Limits.MaxRequestBodySize = 64L << 20;
                k.Listen(address, options.Port);
            });
            var app = builder.Build();
            var server = new OpenAiServer(app, queue, options, name);
            server.Map();
            await app.StartAsync(cancellationToken);
            var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            server.BaseAddress = new Uri(bound.Replace("[::]", "localhost").Replace("0.0.0.0", "127.0.0.1"));
            return server;
        }
        catch
        {
            await queue.CompleteAsync();
            queue.DisposeModels();
            throw;
        }
    }

    /// <summary>
    /// Serves until <paramref name="cancellationToken"/> is cancelled or the lifetime stops (SIGTERM / Ctrl+C when
    /// <see cref="ServeOptions.HandleSignals"/>), then finishes in-flight requests and returns.
    /// </summary>
    public static async Task RunAsync(ServeOptions options, TextWriter log, CancellationToken cancellationToken = default)
    {
        await using var server = await StartAsync(options, cancellationToken);
        log.WriteLine($"serving '{server.ModelName}' ({server._queue.Current.Folder}) on {server.BaseAddress} " +
                      $"(OpenAI API under {new Uri(server.BaseAddress, "v1")}; max batch {options.MaxBatch}, max concurrency {options.MaxConcurrency}" +
                      $"{(options.ApiKey is null ? "" : ", API key required")}); Ctrl+C or SIGTERM stops after in-flight requests");
        log.Flush();
        // The in-flight count is taken when the stop arrives (in the callback), not when this continuation runs on the
        // thread pool: a request may finish in between, and the line would then say 0 for a drain that did happen.
        var stopping = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var a = server.Lifetime.ApplicationStopping.Register(() => stopping.TrySetResult(server.Metrics.InFlight));
        using var b = cancellationToken.Register(() => stopping.TrySetResult(server.Metrics.InFlight));
        long inFlight = await stopping.Task;
        log.WriteLine($"stopping: finishing {inFlight} in-flight request(s)");
        log.Flush();
        await server.StopAsync();
        log.WriteLine($"stopped after {server.Metrics.Requests} request(s) in {server.Metrics.Batches} batch(es)");
    }

    /// <summary>Stops accepting connections, waits for in-flight requests (and their batches), then releases the model.</summary>
    public async Task StopAsync()
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 1) return;
        await _app.StopAsync();        // Kestrel drains in-flight requests; the queue keeps serving them meanwhile
        await _queue.CompleteAsync();
        _queue.DisposeModels();
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        await _app.DisposeAsync();
        _reloadLock.Dispose();
    }

    private static IPAddress ParseHost(string host)
    {
        if (host is "localhost") return IPAddress.Loopback;
        if (host is "*" or "+") return IPAddress.Any;
        return IPAddress.TryParse(host, out var ip) ? ip
            : throw new FineAlignException($"--host '{host}' is not an IP address (use 127.0.0.1, 0.0.0.0, ::1 or localhost)");
    }

    private void Map()
    {
        var app = _app;
        if (_options.ApiKey is string key)
        {
            byte[] expected = Encoding.UTF8.GetBytes("Bearer " + key);
            app.Use(async (ctx, next) =>
            {
                if (ctx.Request.Path.StartsWithSegments("/v1"))
                {
                    byte[] got = Encoding.UTF8.GetBytes(ctx.Request.Headers.Authorization.ToString());
                    if (!CryptographicOperations.FixedTimeEquals(got, expected))
                    {
                        await WriteError(ctx, new ApiException(401, "invalid or missing API key: send 'Authorization: Bearer <key>'", code: "invalid_api_key"));
                        return;
                    }
                }
                await next(ctx);
            });
        }

        app.MapGet("/health", () => Results.Json(new { status = "ok", model = ModelName }));
        app.MapGet("/metrics", () => Results.Text(Metrics.ToPrometheus(), "text/plain; version=0.0.4"));
        app.MapGet("/v1/models", (HttpContext ctx) => WriteJson(ctx, ModelList()));
        app.MapGet("/v1/models/{id}", (HttpContext ctx, string id) => Handle(ctx, c =>
        {
            var (name, model) = ResolveModel(id);
            return WriteJson(c, ModelCard(name, model));
        }));
        app.MapPost("/v1/completions", (HttpContext ctx) => Guarded(ctx, c => Completions.HandleCompletionAsync(this, c)));
        app.MapPost("/v1/chat/completions", (HttpContext ctx) => Guarded(ctx, c => Completions.HandleChatAsync(this, c)));
        app.MapPost("/v1/reload_weights", (HttpContext ctx) => Handle(ctx, ReloadAsync));
        app.MapPost("/v1/load_lora_adapter", (HttpContext ctx) => Handle(ctx, c => LoraAdapters.LoadAsync(this, c)));
        app.MapPost("/v1/unload_lora_adapter", (HttpContext ctx) => Handle(ctx, c => LoraAdapters.UnloadAsync(this, c)));
        app.MapFallback((HttpContext ctx) => WriteError(ctx, new ApiException(404, $"no endpoint {ctx.Request.Method} {ctx.Request.Path}", code: "not_found")));
    }

    private JsonObject ModelList() => new()
    {
        ["object"] = "list",
        ["data"] = new JsonArray(_queue.All.Select(kv => (JsonNode)ModelCard(kv.Key, kv.Value)).ToArray()),
    };

    private JsonObject ModelCard(string name, ServedModel m) => new()
    {
        ["id"] = name, ["object"] = "model", ["created"] = m.LoadedAt.ToUnixTimeSeconds(), ["owned_by"] = "finealign",
        ["root"] = m.Folder, ["parent"] = name == ModelName ? null : ModelName, ["max_model_len"] = m.Context,
    };

    /// <summary>The served model a request names (a missing name means the base model, as vLLM does), or 404.</summary>
    internal (string Name, ServedModel Model) ResolveModel(string name)
    {
        if (name.Length == 0) name = ModelName;
        return _queue.Get(name) is { } m ? (name, m)
            : throw new ApiException(404, $"The model '{name}' does not exist. This server serves {string.Join(", ", _queue.All.Select(kv => $"'{kv.Key}'"))}.",
                                     "model", "model_not_found");
    }

    /// <summary>A generation endpoint: admitted only under --max-concurrency (429 otherwise, which clients retry).</summary>
    private Task Guarded(HttpContext ctx, Func<HttpContext, Task> handler)
    {
        if (!Metrics.TryAdmit(_options.MaxConcurrency))
            return WriteError(ctx, new ApiException(429, $"the server is serving its limit of {_options.MaxConcurrency} requests; retry later",
                                                    code: "too_many_requests", type: "rate_limit_error"));
        return Run();

        async Task Run()
        {
            try { await Handle(ctx, handler); }
            finally { Metrics.Release(); }
        }
    }

    private static async Task Handle(HttpContext ctx, Func<HttpContext, Task> handler)
    {
        try
        {
            await handler(ctx);
        }
        catch (ApiException e) when (!ctx.Response.HasStarted)
        {
            await WriteError(ctx, e);
        }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
        {
            // The client went away; nothing to answer.
        }
        catch (Exception e) when (!ctx.Response.HasStarted)
        {
            await WriteError(ctx, e is FineAlignException ? new ApiException(400, e.Message)
                                                           : new ApiException(500, $"{e.GetType().Name}: {e.Message}", type: "server_error"));
        }
    }

    /// <summary>JSON as clients read it: non-ASCII and quotes unescaped (the output is never embedded in HTML).</summary>
    internal static readonly JsonSerializerOptions JsonOut = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    internal static Task WriteError(HttpContext ctx, ApiException e)
    {
        ctx.Response.StatusCode = e.Status;
        return WriteJson(ctx, e.ToJson());
    }

    internal static async Task WriteJson(HttpContext ctx, JsonNode body)
    {
        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync(body.ToJsonString(JsonOut), ctx.RequestAborted);
    }

    /// <summary>
    /// FineAlign's own endpoint: reloads the model folder (or <c>{"model_path": DIR}</c>) from disk, e.g. after a
    /// trainer wrote new weights there, and swaps it in between two batches (no batch sees two models).
    /// </summary>
    private async Task ReloadAsync(HttpContext ctx)
    {
        string? path = null;
        if (ctx.Request.ContentLength is > 0 || ctx.Request.Headers.TransferEncoding.Count > 0)
        {
            var body = await OpenAiRequest.ReadBodyAsync(ctx.Request.Body, ctx.RequestAborted);
            if (OpenAiRequest.Get(body, "model_path") is JsonElement p)
                path = p.ValueKind == JsonValueKind.String ? p.GetString() : throw new ApiException(400, "model_path must be a string", "model_path");
        }
        await _reloadLock.WaitAsync(ctx.RequestAborted);
        try
        {
            var sw = Stopwatch.StartNew();
            string folder = path ?? _queue.Current.Folder;
            ServedModel fresh;
            try { fresh = await Task.Run(() => ServedModel.Load(folder, _options.DType, _options.ChatTemplate)); }
            catch (FineAlignException e) { throw new ApiException(400, $"reload failed, still serving the previous weights: {e.Message}", "model_path"); }
            await _queue.SwapAsync(ModelName, fresh);
            await WriteJson(ctx, new JsonObject
            {
                ["status"] = "ok", ["model"] = ModelName, ["model_path"] = fresh.Folder,
                ["load_seconds"] = Math.Round(sw.Elapsed.TotalSeconds, 3), ["reloads"] = Metrics.Reloads,
            });
        }
        finally
        {
            _reloadLock.Release();
        }
    }

    /// <summary>An IHostLifetime that ignores process signals: the embedding program decides when to stop.</summary>
    private sealed class EmbeddedLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
