using System.Text.Json;
using System.Text.Json.Nodes;
using FineAlign.Text;

namespace FineAlign.Data;

/// <summary>The TRL dataset conventions FineAlign reads for SFT.</summary>
public enum SftFormat
{
    /// <summary><c>{"prompt": "...", "completion": "..."}</c></summary>
    PromptCompletion,
    /// <summary><c>{"messages": [{"role": ..., "content": ...}, ...]}</c></summary>
    Messages,
    /// <summary><c>{"prompt": [messages], "completion": [messages]}</c> (TRL's conversational prompt-completion).</summary>
    ConversationalPromptCompletion,
    /// <summary><c>{"text": "..."}</c>: language modelling on the whole text.</summary>
    Text,
}

/// <summary>One SFT example as read from a file (<see cref="Line"/> is its 1-based line).</summary>
public abstract record SftExample(long Line)
{
    public abstract SftFormat Format { get; }
}

public sealed record PromptCompletionExample(long Line, string Prompt, string Completion) : SftExample(Line)
{
    public override SftFormat Format => SftFormat.PromptCompletion;
}

/// <summary>
/// A conversation. The first <see cref="PromptCount"/> messages are prompt (0 for the <c>messages</c>
/// format, where every assistant reply is a target; for conversational prompt-completion only the
/// completion's assistant replies are targets).
/// </summary>
public sealed record ChatExample(long Line, IReadOnlyList<ChatMessage> Messages, int PromptCount) : SftExample(Line)
{
    public override SftFormat Format => PromptCount == 0 ? SftFormat.Messages : SftFormat.ConversationalPromptCompletion;
}

public sealed record TextExample(long Line, string Text) : SftExample(Line)
{
    public override SftFormat Format => SftFormat.Text;
}

/// <summary>
/// Reads SFT JSONL files. Each line's format is recognised from its fields; all lines of a file must share
/// one format. Empty prompt, completion, text or message content is an error (an empty prompt would
/// train the model to start replies unprompted; an empty completion gives nothing to learn).
/// </summary>
public static class SftReader
{
    public static IEnumerable<SftExample> Read(string path)
    {
        var single = new SingleFormat<SftFormat>(path, Describe);
        foreach (var line in JsonlReader.Read(path))
        {
            var ex = Parse(line, path);
            single.Check(ex.Format, line.LineNumber);
            yield return ex;
        }
    }

    public static string Describe(SftFormat f) => f switch
    {
        SftFormat.PromptCompletion => "'prompt'+'completion' (strings)",
        SftFormat.Messages => "'messages'",
        SftFormat.ConversationalPromptCompletion => "'prompt'+'completion' (message lists)",
        _ => "'text'",
    };

    /// <summary>Recognises and validates one line.</summary>
    public static SftExample Parse(JsonlLine line, string file)
    {
        var o = line.Object;
        if (o.ContainsKey("messages"))
        {
            var msgs = ParseMessages(line, file, "messages");
            if (!msgs.Any(m => m.Role == "assistant"))
                throw new DataFormatException(file, line.LineNumber, "messages", "no assistant message: nothing to train on");
            return new ChatExample(line.LineNumber, msgs, 0);
        }
        if (o.ContainsKey("prompt") || o.ContainsKey("completion"))
        {
            if (!o.ContainsKey("completion")) throw JsonlReader.Wrong(line, file, "completion", "a string or a list of messages");
            if (!o.ContainsKey("prompt")) throw JsonlReader.Wrong(line, file, "prompt", "a string or a list of messages");
            if (o["prompt"] is JsonArray)
            {
                var prompt = ParseMessages(line, file, "prompt");
                if (o["completion"] is not JsonArray)
                    throw JsonlReader.Wrong(line, file, "completion", "a list of messages (as 'prompt' is one)");
                var completion = ParseMessages(line, file, "completion");
                if (!completion.Any(m => m.Role == "assistant"))
                    throw new DataFormatException(file, line.LineNumber, "completion", "no assistant message: nothing to train on");
                return new ChatExample(line.LineNumber, [.. prompt, .. completion], prompt.Count);
            }
            string p = line.RequireString(file, "prompt");
            string c = line.RequireString(file, "completion");
            if (p.Length == 0) throw new DataFormatException(file, line.LineNumber, "prompt", "is empty");
            if (c.Length == 0) throw new DataFormatException(file, line.LineNumber, "completion", "is empty");
            return new PromptCompletionExample(line.LineNumber, p, c);
        }
        if (o.ContainsKey("text"))
        {
            string t = line.RequireString(file, "text");
            if (t.Length == 0) throw new DataFormatException(file, line.LineNumber, "text", "is empty");
            return new TextExample(line.LineNumber, t);
        }
        throw new DataFormatException(file, line.LineNumber, null,
            "no SFT fields: expected 'prompt'+'completion', 'messages' or 'text'");
    }

    /// <summary>Roles a message may have (tool: a tool's response, as Qwen3's and other templates with tools render it).</summary>
    public static readonly string[] Roles = ["system", "user", "assistant", "tool"];

    /// <summary>
    /// A non-empty list of messages: string 'role' (system, user, assistant or tool) and non-empty string 'content'
    /// (an assistant message with 'tool_calls' may have none). The whole message object is kept for the chat template
    /// (tool_calls, reasoning_content, name ...).
    /// </summary>
    public static List<ChatMessage> ParseMessages(JsonlLine line, string file, string field)
    {
        if (line.Object[field] is not JsonArray arr) throw JsonlReader.Wrong(line, file, field, "a list of messages");
        if (arr.Count == 0) throw new DataFormatException(file, line.LineNumber, field, "is an empty list");
        var result = new List<ChatMessage>(arr.Count);
        for (int i = 0; i < arr.Count; i++)
        {
            string where = $"{field}[{i}]";
            if (arr[i] is not JsonObject m)
                throw new DataFormatException(file, line.LineNumber, where, $"expected an object with 'role' and 'content', got {JsonlReader.Kind(arr[i])}");
            string role = Str(m, "role");
            if (!Roles.Contains(role))
                throw new DataFormatException(file, line.LineNumber, where + ".role", $"'{role}' is not system, user, assistant or tool");
            bool toolCall = role == "assistant" && m["tool_calls"] is JsonArray { Count: > 0 };
            string content = toolCall && m["content"] is null ? "" : Str(m, "content");
            if (content.Length == 0 && !toolCall)
                throw new DataFormatException(file, line.LineNumber, where + ".content", "is empty");
            result.Add(new ChatMessage(role, content) { Fields = (JsonObject)m.DeepClone() });

            string Str(JsonObject obj, string key) =>
                obj[key] is JsonValue v && v.GetValueKind() == JsonValueKind.String
                    ? v.GetValue<string>()
                    : throw new DataFormatException(file, line.LineNumber, $"{where}.{key}",
                        obj.ContainsKey(key) ? $"expected a string, got {JsonlReader.Kind(obj[key])}" : "missing (expected a string)");
        }
        return result;
    }
}
