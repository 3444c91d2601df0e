using System.Text.Json.Nodes;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Text.Jinja;

namespace FineAlign.Tests.Text;

/// <summary>
/// Qwen3's real template (../shared/tokenizers/qwen3) beyond the reference cases: enable_thinking, tools, tool calls
/// and responses, reasoning_content, and the assistant mask with the real tokenizer. Expected strings are worked by
/// hand from the template text.
/// </summary>
public class Qwen3TemplateTests
{
    private static string Folder => TestPaths.RequireShared(Path.Combine("tokenizers", "qwen3"));

    private static ChatTemplate Template(IReadOnlyDictionary<string, object?>? kwargs = null, TextTokenizer? tok = null)
    {
        var (template, bos, eos) = ChatTemplateReferenceTests.ReadConfig(Folder);
        return new ChatTemplate(template, "qwen3", tok, bos, eos, kwargs);
    }

    private static List<ChatMessage> Msgs(string json) => ChatTemplateReferenceTests.Messages(JsonNode.Parse(json)!.AsArray());

    [Fact]
    public void EnableThinking_FalseAddsAnEmptyThinkBlock_TrueDoesNot()
    {
        var m = Msgs("""[{"role": "user", "content": "Hi"}]""");
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
            Template(new Dictionary<string, object?> { ["enable_thinking"] = false }).RenderText(m, true));
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            Template(new Dictionary<string, object?> { ["enable_thinking"] = true }).RenderText(m, true));
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", Template().RenderText(m, true));
    }

    [Fact]
    public void Tools_AreListedInTheSystemTurnAsJson()
    {
        var tools = JinjaValues.FromJson(JsonNode.Parse("""[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "required": ["city"]}}}]"""));
        var text = Template(new Dictionary<string, object?> { ["tools"] = tools })
            .RenderText(Msgs("""[{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]"""), true);
        Assert.Equal(
            "<|im_start|>system\nS\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
            "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\", \"required\": [\"city\"]}}}\n</tools>\n\n" +
            "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n" +
            "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" +
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n", text);
    }

    [Fact]
    public void ToolCallsAndToolResponses()
    {
        var m = Msgs("""
            [{"role": "user", "content": "Q"},
             {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
             {"role": "tool", "content": "sunny"},
             {"role": "assistant", "content": "It is sunny."}]
            """);
        Assert.Equal(
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n" +
            "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n" +
            "<|im_start|>assistant\n<think>\n\n</think>\n\nIt is sunny.<|im_end|>\n", Template().RenderText(m, false));
    }

    [Fact]
    public void ReasoningContent_IsShownAfterTheLastQuery_DroppedBefore()
    {
        var m = Msgs("""
            [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2", "reasoning_content": "one and one"},
             {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning_content": "two and two"}]
            """);
        Assert.Equal(
            "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n" +
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\ntwo and two\n</think>\n\n4<|im_end|>\n", Template().RenderText(m, false));
        // <think> inside content is split out the same way.
        Assert.Equal("<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\nr\n</think>\n\nA<|im_end|>\n",
            Template().RenderText(Msgs("""[{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>\nr\n</think>\n\nA"}]"""), false));
    }

    [Fact]
    public void AssistantMask_WithTheRealTokenizer_CoversRepliesAndImEnd()
    {
        var tok = TokenizerLoader.Load(Folder);
        var chat = Template(tok: tok);
        Assert.Equal("<|im_end|>", chat.EndOfTurn.Text);
        Assert.Equal(151645, chat.EndOfTurn.Id);
        var m = Msgs("""
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help you today?"},
             {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "2+2 equals 4."}]
            """);
        var ex = chat.EncodeConversation(m);
        Assert.Equal(["Hello! How can I help you today?<|im_end|>", "<think>\n\n</think>\n\n2+2 equals 4.<|im_end|>"],
            ChatTemplatesTests.TargetRuns(tok, ex));
        // The ids are the whole rendering's (no BOS: Qwen3 adds none), and the prompt ids are a prefix of them.
        Assert.Equal(tok.Encode(chat.RenderText(m, false)), ex.InputIds);
        int[] prompt = chat.EncodePrompt(m[..3]);
        Assert.Equal(prompt, ex.InputIds[..prompt.Length]);
    }
}
