//! [`RunCommand`]: a command with the id of the bot command it came from (bot mode,
//! docs/AGENT.md 4.1): the events it causes carry the id ([`CommandTags`]).

use super::*;
use crate::command::{help_text, Command};

/// Run `command` as the bot command `id`. Answers an error for the runner to report
/// (tagged with the id); `quit` is the runner's, not the agent's, and does nothing here.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct RunCommand {
    /// What to do.
    pub command: Command,
    /// The bot's id for it.
    pub id: Option<serde_json::Value>,
}

impl Handler<RunCommand> for AgentActor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: RunCommand, ctx: &mut Context<Self>) -> Self::Result {
        self.tags.begin(msg.id);
        let done: Result<(), String> = match msg.command {
            Command::Msg { peer, text } => {
                // Its outcome is reported by the agent, once, with the id.
                drop(Handler::<SendText>::handle(self, SendText { peer, text }, ctx));
                Ok(())
            }
            Command::Peers => {
                Handler::<ListPeers>::handle(self, ListPeers, ctx);
                Ok(())
            }
            Command::Groups => {
                Handler::<ListGroups>::handle(self, ListGroups, ctx);
                Ok(())
            }
            Command::GroupMsg { group, text } => {
                Handler::<SendGroupText>::handle(self, SendGroupText { group, text }, ctx)
            }
            Command::Group(op) => {
                let id = self.tags.current().cloned();
                let done = Handler::<GroupOp>::handle(self, GroupOp(op), ctx);
                self.tags.end();
                // Its failure is this command's answer, tagged with its id.
                ctx.spawn(done.map(move |result, act, _| {
                    if let Err(reason) = result {
                        act.emit_tagged(Event::error(reason), id);
                    }
                }));
                return Box::pin(async { Ok(()) });
            }
            Command::Status => {
                Handler::<ShowStatus>::handle(self, ShowStatus, ctx);
                Ok(())
            }
            Command::History { peer, count } => {
                Handler::<ShowHistory>::handle(self, ShowHistory { peer, count }, ctx)
            }
            Command::Verify { peer } => Handler::<Verify>::handle(self, Verify { peer }, ctx).map(|_| ()),
            Command::Trust { peer, digits } => Handler::<Trust>::handle(self, Trust { peer, digits }, ctx),
            Command::Reject { peer } => Handler::<Reject>::handle(self, Reject { peer }, ctx),
            Command::ClaimName | Command::ReleaseName => {
                let set = SetOwnName {
                    claim: msg.command == Command::ClaimName,
                    timeout_ms: self.settings.expect_timeout_ms,
                };
                let answer = Handler::<SetOwnName>::handle(self, set, ctx);
                self.tags.end();
                return answer;
            }
            Command::Help => {
                self.emit(Event::Help {
                    text: help_text().to_string(),
                });
                Ok(())
            }
            Command::Quit => Ok(()),
        };
        self.tags.end();
        Box::pin(async move { done })
    }
}

/// Print `event` as the answer to the bot command `id` (an error the runner reports).
#[derive(Message)]
#[rtype(result = "()")]
pub struct EmitTagged(pub Event, pub Option<serde_json::Value>);

impl Handler<EmitTagged> for AgentActor {
    type Result = ();

    fn handle(&mut self, msg: EmitTagged, _: &mut Context<Self>) {
        self.emit_tagged(msg.0, msg.1);
    }
}
