using System.Text.Json;
using System.Text.Json.Nodes;
using FineAlign.Models;
using Microsoft.AspNetCore.Http;

namespace FineAlign.Serving;

/// <summary>
/// vLLM's runtime LoRA endpoints: POST /v1/load_lora_adapter {"lora_name", "lora_path"[, "load_inplace"]} and
/// POST /v1/unload_lora_adapter {"lora_name"}. An adapter (PEFT format, <see cref="Lora"/>) is merged into a fresh
/// copy of the base weights and served as its own model name: requests naming it decode with base + adapter, in
/// batches of their own. Each loaded adapter costs one model copy of memory (merged weights; no per-request adapter math).
/// </summary>
internal static class LoraAdapters
{
    public static async Task LoadAsync(OpenAiServer server, HttpContext ctx)
    {
        var body = await OpenAiRequest.ReadBodyAsync(ctx.Request.Body, ctx.RequestAborted);
        string name = RequiredString(body, "lora_name"), path = RequiredString(body, "lora_path");
        bool inPlace = OpenAiRequest.Get(body, "load_inplace") is { ValueKind: JsonValueKind.True };
        if (name == server.ModelName) throw new ApiException(400, $"lora_name '{name}' is the base model's name", "lora_name");
        if (server.Queue.Get(name) is not null && !inPlace)
            throw new ApiException(400, $"The lora adapter '{name}' has already been loaded (unload it first, or send \"load_inplace\": true).", "lora_name");
        if (!Lora.IsAdapterFolder(path)) throw new ApiException(400, $"{path}: not a LoRA adapter folder (no {Lora.ConfigFile})", "lora_path");
        var baseModel = server.Queue.Current;
        ServedModel merged;
        try
        {
            merged = await Task.Run(() =>
            {
                var m = ServedModel.Load(baseModel.Folder, server.Options.DType, server.Options.ChatTemplate);
                try { Lora.MergeInto(m.Model, path); return m; }
                catch { m.Dispose(); throw; }
            });
        }
        catch (FineAlignException e) { throw new ApiException(400, $"loading LoRA adapter '{name}' failed: {e.Message}", "lora_path"); }
        await server.Queue.SwapAsync(name, merged);
        await OpenAiServer.WriteJson(ctx, new JsonObject { ["status"] = "ok", ["message"] = $"Success: LoRA adapter '{name}' added successfully.", ["lora_name"] = name, ["lora_path"] = path });
    }

    public static async Task UnloadAsync(OpenAiServer server, HttpContext ctx)
    {
        var body = await OpenAiRequest.ReadBodyAsync(ctx.Request.Body, ctx.RequestAborted);
        string name = RequiredString(body, "lora_name");
        if (name == server.ModelName) throw new ApiException(400, "the base model cannot be unloaded", "lora_name");
        if (server.Queue.Get(name) is null) throw new ApiException(404, $"The lora adapter '{name}' cannot be found.", "lora_name", "model_not_found");
        await server.Queue.SwapAsync(name, null);
        await OpenAiServer.WriteJson(ctx, new JsonObject { ["status"] = "ok", ["message"] = $"Success: LoRA adapter '{name}' removed successfully.", ["lora_name"] = name });
    }

    private static string RequiredString(JsonElement o, string name) =>
        OpenAiRequest.Get(o, name) is { ValueKind: JsonValueKind.String } s && s.GetString() is { Length: > 0 } v ? v
            : throw new ApiException(400, $"{name} is required (a non-empty string)", name);
}
