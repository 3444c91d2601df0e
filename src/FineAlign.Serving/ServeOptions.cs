using static TorchSharp.torch;

namespace FineAlign.Serving;

/// <summary>What <c>finealign serve</c> serves and how. Names follow vLLM's flags where one exists.</summary>
public sealed record ServeOptions
{
    /// <summary>Hugging Face model folder (config.json + safetensors, tokenizer files for text prompts).</summary>
    public required string ModelPath { get; init; }

    /// <summary>The model id clients send and /v1/models lists; default: the folder's name.</summary>
    public string? ServedModelName { get; init; }

    /// <summary>Address to bind; loopback unless told otherwise ("0.0.0.0" for every interface).</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>TCP port; 0 picks a free one (see <see cref="OpenAiServer.BaseAddress"/>).</summary>
    public int Port { get; init; } = 8000;

    /// <summary>When set, every /v1 request needs <c>Authorization: Bearer KEY</c> (401 otherwise).</summary>
    public string? ApiKey { get; init; }

    /// <summary>Most sequences (prompts × n) decoded together in one generation call.</summary>
    public int MaxBatch { get; init; } = 32;

    /// <summary>Most generation requests admitted at once; the next one is answered 429 (clients retry it).</summary>
    public int MaxConcurrency { get; init; } = 64;

    /// <summary>How long an idle worker waits for more requests before it starts a batch.</summary>
    public TimeSpan BatchWindow { get; init; } = TimeSpan.FromMilliseconds(5);

    /// <summary>Chat format name (chatml, llama2, zephyr); default: recognised from the tokenizer's chat_template.</summary>
    public string? ChatTemplate { get; init; }

    public ScalarType DType { get; init; } = ScalarType.Float32;

    /// <summary>Stop on SIGTERM / Ctrl+C (the CLI); false for a server embedded in another program or a test.</summary>
    public bool HandleSignals { get; init; }

    /// <summary>How long shutdown waits for in-flight requests.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromMinutes(2);

    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(ModelPath)) throw new FineAlignException("serve needs a model folder");
        if (Port is < 0 or > 65535) throw new FineAlignException($"port must be in [0, 65535] (got {Port})");
        if (MaxBatch < 1) throw new FineAlignException($"max batch must be at least 1 (got {MaxBatch})");
        if (MaxConcurrency < 1) throw new FineAlignException($"max concurrency must be at least 1 (got {MaxConcurrency})");
        if (BatchWindow < TimeSpan.Zero) throw new FineAlignException("batch window must not be negative");
        if (ApiKey is { Length: 0 }) throw new FineAlignException("the API key must not be empty");
    }
}
