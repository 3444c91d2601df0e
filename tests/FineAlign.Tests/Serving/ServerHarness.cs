using System.ClientModel;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Serving;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using OpenAI;
using OpenAI.Chat;
using System.ClientModel.Primitives;
using OpenAI.Models;

namespace FineAlign.Tests.Serving;

/// <summary>
/// A real <see cref="OpenAiServer"/> (Kestrel on a free loopback port) over a tiny random byte-tokenizer model saved
/// in a temporary folder, plus the official OpenAI SDK clients and a raw HttpClient pointed at it.
/// </summary>
internal sealed class ServerHarness : IAsyncDisposable
{
    public const string Name = "tiny";

    private readonly TempDir _dir;

    private ServerHarness(TempDir dir, string modelDir, OpenAiServer server, string? apiKey)
    {
        _dir = dir;
        ModelDir = modelDir;
        Server = server;
        var options = new OpenAIClientOptions { Endpoint = new Uri(server.BaseAddress, "v1"), NetworkTimeout = TimeSpan.FromSeconds(60) };
        var key = new ApiKeyCredential(apiKey ?? "unused");
        Chat = new ChatClient(Name, key, options);
        Models = new OpenAIModelClient(key, options);
        Http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        if (apiKey is not null) Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
    }

    public string ModelDir { get; }
    public OpenAiServer Server { get; }
    public ChatClient Chat { get; }
    public OpenAIModelClient Models { get; }
    public HttpClient Http { get; }

    public static async Task<ServerHarness> StartAsync(Func<ServeOptions, ServeOptions>? configure = null, int context = 96, long seed = 11)
    {
        var dir = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(dir.Path, "model"), seed, context);
        var options = new ServeOptions { ModelPath = modelDir, ServedModelName = Name, Port = 0 };
        options = configure?.Invoke(options) ?? options;
        var server = await OpenAiServer.StartAsync(options);
        return new ServerHarness(dir, modelDir, server, options.ApiKey);
    }

    /// <summary>POSTs a JSON body (raw text, so malformed bodies can be sent) and returns status and parsed JSON.</summary>
    public async Task<(int Status, JsonNode? Body)> PostAsync(string path, string json)
    {
        using var response = await Http.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
        string text = await response.Content.ReadAsStringAsync();
        return ((int)response.StatusCode, text.Length == 0 ? null : JsonNode.Parse(text));
    }

    /// <summary>
    /// A completion through the SDK's own HTTP pipeline (its auth header, retry policy and transport): SDK 2.15 keeps
    /// its legacy-completions client internal, so /v1/completions is sent as a protocol-level request on the pipeline
    /// the SDK's ChatClient uses. A non-success status throws the SDK's <see cref="ClientResultException"/>.
    /// </summary>
    public async Task<JsonObject> CompleteAsync(JsonObject body)
    {
        body["model"] ??= Name;
        using var message = Chat.Pipeline.CreateMessage();
        message.Request.Method = "POST";
        message.Request.Uri = new Uri(Server.BaseAddress, "v1/completions");
        message.Request.Headers.Set("Content-Type", "application/json");
        message.Request.Content = BinaryContent.Create(BinaryData.FromString(body.ToJsonString()));
        await Chat.Pipeline.SendAsync(message);
        var response = message.Response!;
        if (response.IsError) throw new ClientResultException(response);
        return JsonNode.Parse(response.Content.ToString())!.AsObject();
    }

    /// <summary>The model as the server loaded it, for computing expected outputs in-process.</summary>
    public CausalLM LoadModel() => ModelIO.Load(ModelDir);

    public async Task<double> MetricAsync(string name)
    {
        string text = await Http.GetStringAsync("/metrics");
        string line = text.Split('\n').Single(l => l.StartsWith("finealign_" + name + " ", StringComparison.Ordinal));
        return double.Parse(line.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
        _dir.Dispose();
    }

    public static int[] Ints(JsonNode? node) => node!.AsArray().Select(x => x!.GetValue<int>()).ToArray();

    /// <summary>Token ids from vLLM's "token_id:N" strings.</summary>
    public static int[] TokenIds(JsonNode? tokens) => tokens!.AsArray().Select(t => int.Parse(t!.GetValue<string>()["token_id:".Length..])).ToArray();

    public static GenerationOptions Greedy(int maxNew) => new() { MaxNewTokens = maxNew, DoSample = false };
}
